"""The shape shared by the per-study operators: receive a batch, advance each study, emit."""

from __future__ import annotations

import logging
from collections.abc import Callable

from holoscan.core import Operator, OperatorSpec

from operators.study_batch import StageProgress, advance


class StudyStageOperator(Operator):
    """Thin Holoscan glue around one plain stage function applied to each study of a batch.

    Subclasses pass `stage` (a name for logs and outcomes) and `step` (the plain function, tested
    without Holoscan). The input port is `in`, the output port `out`. `progress`, if given, is
    told after each study (see `operators.study_batch.advance`).
    """

    def __init__(self, fragment, *args, stage: str, step: Callable, progress: StageProgress | None = None, **kwargs):
        self.stage = stage
        self.step = step
        self.progress = progress
        self.logger = logging.getLogger(f"biomedclip_map.{stage.replace(' ', '_')}")
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("in")
        spec.output("out")

    def compute(self, op_input, op_output, context) -> None:
        batch = op_input.receive("in")
        op_output.emit(advance(batch, self.stage, self.step, self.logger, self.progress), "out")
