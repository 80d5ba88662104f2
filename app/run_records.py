"""What a run leaves besides the DICOM results: the audit trail and the de-identified export.

Both happen after the graph has run, when every study's outcome and output files are known:
`prepare_run_records` checks the export folder before the run starts (a bad folder is a setting
error, exit code 2), `record_run` exports each reported study de-identified (if configured) and
appends one audit line per study.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app import APP_NAME, __version__
from app.settings import RunSettings, SettingsError
from common.model_identity import ModelIdentity
from operators.outputs.audit import AuditContext, append_audit, record_for
from operators.phi.deidentify import (
    ExportSettingsError,
    check_export_dir,
    export_study,
    result_files,
)
from operators.messages import OutcomeStatus, StudyOutcome

logger = logging.getLogger("biomedclip_map.records")


def prepare_run_records(settings: RunSettings) -> None:
    """Check (and create) the de-identified export folder; SettingsError names the flag if unusable."""
    if settings.deid_export_dir is not None:
        try:
            check_export_dir(settings.deid_export_dir, settings.output_path, settings.input_path)
        except ExportSettingsError as exc:
            raise SettingsError(str(exc)) from exc


def export_deidentified(outcomes: Sequence[StudyOutcome], settings: RunSettings) -> dict[str, int]:
    """De-identified copies of every reported study's results (and inputs if asked); files per study ref.

    Each instance left out (unreadable, or pixels that may show who the patient is) gets one
    warning line naming the study ref and why, never the patient.
    """
    written: dict[str, int] = {}
    if settings.deid_export_dir is None:
        return written
    for outcome in outcomes:
        if outcome.status is not OutcomeStatus.REPORTED:
            continue
        analysed = list(outcome.analysed_inputs)
        export = export_study(
            outcome.study_ref,
            result_files(outcome.study_ref, [o.path for o in outcome.outputs if o.is_dicom], settings.output_path),
            analysed if settings.deid_include_inputs else [],
            settings.deid_export_dir,
            # not exported, but read so that the SR's references to withheld inputs go either way
            other_inputs=[] if settings.deid_include_inputs else analysed,
        )
        for reason in export.left_out:
            logger.warning("de-identified export: %s", reason)
        written[outcome.study_ref] = len(export.written)
        logger.info(
            "study %s: %d de-identified file(s) written under %s", outcome.study_ref, len(export.written), settings.deid_export_dir
        )
    return written


def record_run(outcomes: Sequence[StudyOutcome], settings: RunSettings, model: ModelIdentity, backend: str) -> dict[str, int]:
    """Export (if configured), then append the run's audit lines; the de-identified files per study ref.

    Raises AuditWriteError if the audit trail cannot be written.
    """
    exported = export_deidentified(outcomes, settings)
    if settings.audit_log is None:
        return exported
    context = AuditContext(model=model, backend=backend, product=APP_NAME, version=__version__)
    records = [record_for(o, deidentified=exported.get(o.study_ref, 0)) for o in outcomes]
    count = append_audit(settings.audit_log, records, context)
    logger.debug("%d audit line(s) appended to %s", count, settings.audit_log)
    return exported
