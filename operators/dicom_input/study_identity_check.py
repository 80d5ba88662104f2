"""The loader's identity check: a study whose instances are not one patient is not reported.

See `operators.dicom_input.patient_identity` for the rule. The refusal is one log line (no values, the study
by its salted reference) and a REFUSED outcome, which makes the run's exit code 1 and makes the
DICOM node quarantine the study at once with the reason: re-running it cannot help, a person must
correct the study at the PACS.
"""

from __future__ import annotations

import logging

from operators.messages import OutcomeStatus, StudyHeader, StudyOutcome
from operators.dicom_input.patient_identity import identity_conflict

logger = logging.getLogger("biomedclip_map.loader")

IDENTITY_STAGE = "identity check"


def identity_refusal(study: StudyHeader) -> StudyOutcome | None:
    """A REFUSED outcome when the study's instances disagree on patient identity, else None."""
    conflict = identity_conflict(study.identities)
    if conflict is None:
        return None
    reason = (
        f"not reported: its instances disagree on patient identity ({conflict}); a report could be filed "
        "under the wrong patient. Correct the study at the PACS (split or re-assign the mis-filed instances) "
        "and send it again"
    )
    logger.error("study %s: %s", study.ref, reason)
    return StudyOutcome(study_ref=study.ref, status=OutcomeStatus.REFUSED, reason=reason, stage=IDENTITY_STAGE)
