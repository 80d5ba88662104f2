"""The MAP's operators: one Holoscan operator per graph node, the typed messages between them, and
their logic in plain typed modules grouped by domain.

Top level: the operators (`*_operator.py`, thin glue), `messages` (what travels on the edges),
`study_batch` and `stage_operator` (how a stage advances each study of a batch on its own).

Subpackages, in pipeline order:

- `dicom_input`: scanning, reading and checking what PACS sent; series selection rules;
- `preparation`: per-modality preprocessing into model tensors;
- `inference`: zero-shot scoring;
- `specialists`: analyses beyond zero-shot (the burn specialist), behind one protocol;
- `phi`: the free-text scrubber, the opt-in clinical-context line, the de-identified export;
- `sr`: the Structured Report, its read-back and the product's codes;
- `captures`: the Secondary Captures;
- `outputs`: output identity, atomic DICOM writing, JSON results, the audit trail.
"""
