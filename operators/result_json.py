"""Machine-readable results (JSON) for integrations, written only where the configuration says.

The DICOM output folder holds only DICOM (MONAI Deploy Express exports it as DICOM), so JSON goes
to its own folder. Studies are named by their salted reference; no patient or study identifiers
are written.
"""

from __future__ import annotations

from pathlib import Path

from common.atomic_files import Durability, write_json_atomically

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
    return write_json_atomically(
        directory / f"{analysis.study.ref}.json", analysis_document(analysis, report_name), durability=Durability.FILE_AND_FOLDER
    )
