"""Machine-readable results (JSON) for integrations, written only where the configuration says.

The DICOM output folder holds only DICOM (MONAI Deploy Express exports it as DICOM), so JSON goes
to its own folder. Studies are named by their salted reference; no patient or study identifiers
are written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from operators.messages import StudyAnalysis


def analysis_document(analysis: StudyAnalysis, report_name: str) -> dict:
    """The findings of one study as plain JSON values (label probabilities per series and image)."""
    return {
        "study": analysis.study.ref,
        "report": report_name,
        "model": {
            "name": analysis.model.name,
            "version": analysis.model.version,
            "sha256": analysis.model.sha256,
            "status": analysis.model.status,
        },
        "backend": analysis.backend,
        "complete": analysis.left_out == 0,
        "ai_generated": True,
        "requires_clinician_review": True,
        "meaningful": not analysis.model.untrained,
        "series": [
            {
                "selection": s.selection.selection_name,
                "task": s.task.name,
                "top_label": s.top_label,
                "top_probability": round(s.top_probability, 4),
                "probabilities": {lbl: round(float(p), 4) for lbl, p in zip(s.task.label_names, s.probabilities)},
                "images": len(s.images),
                "preprocessing": s.preprocessing,
            }
            for s in analysis.series
        ],
    }


def write_result_json(analysis: StudyAnalysis, directory: Path, report_name: str) -> Path:
    """Write `<study ref>.json` atomically into `directory` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{analysis.study.ref}.json"
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(analysis_document(analysis, report_name), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
