"""Specialists: analyses that go beyond zero-shot classification for some selections.

A specialist receives a study's analysed series (`operators.messages.StudyAnalysis`) and returns
plain findings (`operators.messages.SpecialistFindings`: coded measurement groups, narrative
lines, summary lines and optional captures). The SR, its read-back, the Secondary Captures and the
JSON results handle those findings without knowing which specialist made them.

- `protocol`: what a specialist is (`Specialist`) and how the product finds, configures and builds
  one (`SpecialistKind`);
- `registry`: the specialists this product ships, one line each;
- `run`: the step that runs every configured specialist on a study;
- `burn`: the burn specialist (depth, colour wound map, %TBSA, flags, overlay capture).

Adding a specialist means writing one subpackage that defines a `SpecialistKind` and adding one
line to `registry.SPECIALISTS`.
"""
