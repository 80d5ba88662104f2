"""DICOMLoader: finds the studies in the input folder, reading headers only."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from holoscan.core import Operator, OperatorSpec

from operators.dicom_input.dicom_scan import scan_input
from operators.messages import Batch, StudyHeader
from operators.dicom_input.study_identity_check import identity_refusal

logger = logging.getLogger("biomedclip_map.loader")


class DICOMLoaderOperator(Operator):
    """Source of the graph: emits a `Batch[StudyHeader]` of every study found under `input_path`.

    Replaces the SDK's DICOMDataLoaderOperator, which reads every file of the input in full (pixel
    data included) before any selection; `bench/loader.py` measures the difference.
    Files that cannot be analysed are skipped with one log line each and listed in the batch. A
    study whose instances disagree on patient identity ends here, REFUSED (`identity_refusal`).

    `on_scanned`, if given, is called with the studies found before they are emitted: the
    application uses it to give their identifying values to its log redactor (a second layer;
    log lines quote no DICOM value and name files only by reference).
    """

    def __init__(
        self, fragment, *args, input_path: Path, uid_salt: str,
        on_scanned: Callable[[Sequence[StudyHeader]], None] | None = None, **kwargs,
    ):
        self.input_path = Path(input_path)
        self.uid_salt = uid_salt
        self.on_scanned = on_scanned
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("out")

    def compute(self, op_input, op_output, context) -> None:
        scan = scan_input(self.input_path, salt=self.uid_salt)
        if self.on_scanned is not None:
            self.on_scanned(scan.studies)
        batch = Batch(skipped_files=list(scan.skipped))
        for study in scan.studies:
            refusal = identity_refusal(study)
            if refusal is None:
                batch.items.append(study)
            else:
                batch.ended.append(refusal)
        op_output.emit(batch, "out")
