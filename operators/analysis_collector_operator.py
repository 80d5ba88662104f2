"""AnalysisCollector: the graph's sink when no report is written (site validation).

It takes the SRWriter's place at the end of the same graph, so validation measures exactly what
the MAP would report, and hands each study's `StudyAnalysis` (probabilities and embeddings per
image) to the caller's `RunResults` instead of writing a DICOM SR.
"""

from __future__ import annotations

import logging

from holoscan.core import Operator, OperatorSpec

from operators.messages import OutcomeStatus, RunResults, StudyAnalysis, StudyOutcome

logger = logging.getLogger("biomedclip_map.analysis_collector")


def analysed_outcome(analysis: StudyAnalysis) -> StudyOutcome:
    """The outcome of a study that was analysed and handed back, with nothing written."""
    return StudyOutcome(
        study_ref=analysis.study.ref,
        status=OutcomeStatus.ANALYSED,
        timings=analysis.study.timings,
        redactions=dict(analysis.redactions),
    )


class AnalysisCollectorOperator(Operator):
    """Sink: every study's outcome to `results`, and every analysis to `results.add_analyses`."""

    def __init__(self, fragment, *args, results: RunResults, **kwargs):
        self.results = results
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("in")

    def compute(self, op_input, op_output, context) -> None:
        batch = op_input.receive("in")
        self.results.add_analyses(list(batch.items))
        self.results.add([*batch.ended, *(analysed_outcome(a) for a in batch.items)])
        logger.info("%d study(ies) analysed and collected (no report written)", len(batch.items))
