"""DICOMLoader: finds the studies in the input folder, reading headers only."""

from __future__ import annotations

import logging
from pathlib import Path

from holoscan.core import Operator, OperatorSpec

from app.log_privacy import scan_logging
from operators.dicom_input.dicom_scan import scan_input
from operators.messages import Batch
from operators.dicom_input.study_identity_check import identity_refusal

logger = logging.getLogger("biomedclip_map.loader")


class DICOMLoaderOperator(Operator):
    """Source of the graph: emits a `Batch[StudyHeader]` of every study found under `input_path`.

    Replaces the SDK's DICOMDataLoaderOperator, which reads every file of the input in full (pixel
    data included) before any selection; `bench/loader.py` measures the difference.
    Files that cannot be analysed are skipped with one log line each and listed in the batch. A
    study whose instances disagree on patient identity ends here, REFUSED (`identity_refusal`).
    """

    def __init__(self, fragment, *args, input_path: Path, uid_salt: str, **kwargs):
        self.input_path = Path(input_path)
        self.uid_salt = uid_salt
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("out")

    def compute(self, op_input, op_output, context) -> None:
        # Lines the scan logs are held until its studies' identifiers are known to the log redactor.
        with scan_logging(self.input_path, self.uid_salt) as register_studies:
            scan = scan_input(self.input_path, salt=self.uid_salt)
            register_studies(scan.studies)
        batch = Batch(skipped_files=list(scan.skipped))
        for study in scan.studies:
            refusal = identity_refusal(study)
            if refusal is None:
                batch.items.append(study)
            else:
                batch.ended.append(refusal)
        op_output.emit(batch, "out")
