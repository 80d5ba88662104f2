"""The burn specialist: burn photographs get a depth estimate, a colour wound map, %TBSA and flags.

- `config`: `burn.yaml` (selections, depth classes, flag thresholds, colour classes, TBSA tables);
- `analysis`: the per-photograph steps (depth, wound map, region, %TBSA, flags, overlay);
- `depth`, `wound_colour`, `tbsa`, `flags`, `overlay`: one step each;
- `findings`: the burn specialist's own result types;
- `report`: those results as generic findings (measurement groups, narrative, summary, captures);
- `specialist`: the `BurnSpecialist` and its registration (`BURN`).
"""
