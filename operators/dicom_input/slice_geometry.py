"""Whether a volume series is a regular stack of slices: gaps, duplicate positions, mixed thickness.

A CT or MR series with a missing slice, two slices at the same position or slices of different
thickness is still analysed (the analysis samples a few representative slices), but a reader must
know that the volume was irregular: an incomplete transfer, a merged series, or a reconstruction
mixed with its source. `geometry_notes` says so in sentences without identifiers (positions and
thicknesses in millimetres only), which go into one log line and the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from operators.messages import InstanceFile

#: Positions closer than this (mm) are the same position.
SAME_POSITION_MM = 0.01
#: A spacing this many times the series' usual spacing is a gap.
GAP_FACTOR = 1.5
#: Thicknesses that differ by more than this (mm) are different.
THICKNESS_TOLERANCE_MM = 0.01


def geometry_notes(instances: Sequence[InstanceFile]) -> list[str]:
    """Sentences describing the irregularities of a stack of single-frame slices (empty when regular).

    Only instances with a slice position count; fewer than three such slices say nothing.
    """
    positions = np.array(sorted(i.slice_position for i in instances if i.slice_position is not None), dtype=float)
    notes: list[str] = []
    if len(positions) >= 3:
        steps = np.diff(positions)
        duplicates = int(np.sum(steps < SAME_POSITION_MM))
        if duplicates:
            notes.append(f"{duplicates} slice(s) share their position with another slice (duplicate positions)")
        spacing = steps[steps >= SAME_POSITION_MM]
        if len(spacing) >= 2:
            usual = float(np.median(spacing))
            gaps = spacing[spacing > GAP_FACTOR * usual]
            if len(gaps):
                notes.append(
                    f"{len(gaps)} gap(s) between slices (largest {float(gaps.max()):.2f} mm where the usual spacing is "
                    f"{usual:.2f} mm): slices may be missing"
                )
    thicknesses = sorted({round(i.slice_thickness, 2) for i in instances if i.slice_thickness is not None})
    if len(thicknesses) > 1 and thicknesses[-1] - thicknesses[0] > THICKNESS_TOLERANCE_MM:
        shown = ", ".join(f"{t:g}" for t in thicknesses[:5]) + (", ..." if len(thicknesses) > 5 else "")
        notes.append(f"slices of different thickness ({shown} mm)")
    return notes
