"""The parity gate measures the engine, not the model's indecision.

Synthetic embeddings show what each figure counts (near-ties are not decisive; a flipped decisive
decision is refused; too few decisive decisions are reported, never passed on agreement). The
real gate is then fed the tiny model's real INT8 graph (accepted) and the same graph with its
quantisation scales perturbed (refused), both run by ONNX Runtime on the sample-study probe set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.probe_set import SampleStudyProbes
from engines.parity_gate import (
    DECISIVE_MARGIN,
    GATE_FORMAT,
    INT8_THRESHOLDS,
    MIN_DECISIVE_DECISIONS,
    GateRecords,
    GateThresholds,
    decision_figures,
    evaluate_gate,
)
from models.directory import ModelDirectory, open_model_dir

PROBES = SampleStudyProbes()


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _two_class_task(dim: int = 8) -> np.ndarray:
    classes = np.zeros((2, dim))
    classes[0, 0] = classes[1, 1] = 1.0
    return classes


def _images_at(angles: np.ndarray, dim: int = 8) -> np.ndarray:
    """Embeddings in the plane of the two classes: angle 45° is an exact tie, 0° is class 0."""
    rows = np.zeros((len(angles), dim))
    rows[:, 0], rows[:, 1] = np.cos(angles), np.sin(angles)
    return rows


def test_a_flipped_near_tie_is_not_counted_but_a_flipped_decisive_decision_is() -> None:
    task = [_two_class_task()]
    near_tie = np.full(30, np.pi / 4 - 0.002)  # class 0 by a hair
    decisive = np.full(30, 0.2)  # class 0 clearly at logit scale 20
    reference = _images_at(np.concatenate([near_tie, decisive]))
    tie_flipped = _images_at(np.concatenate([near_tie + 0.004, decisive]))
    figures = decision_figures(reference, tie_flipped, task, 20.0, DECISIVE_MARGIN)
    assert figures.decisions == 60 and figures.decisive_decisions == 30 and figures.decisive_agreeing == 30
    assert figures.top1_agreement == pytest.approx(0.5)  # the old all-decisions figure would have refused this
    assert figures.max_prob_change < INT8_THRESHOLDS.max_prob_change  # within what INT8 may move

    decisive_flipped = _images_at(np.concatenate([near_tie, np.full(30, np.pi / 2 - 0.2)]))
    figures = decision_figures(reference, decisive_flipped, task, 20.0, DECISIVE_MARGIN)
    assert figures.decisive_agreeing == 0 and figures.max_prob_change > 0.9


def _gate(reference: np.ndarray, candidate: np.ndarray, thresholds: GateThresholds, logit_scale: float = 20.0):
    probes = np.arange(len(reference), dtype=np.float32)[:, None]
    lookup = lambda table: (lambda batch: table[batch[:, 0].astype(int)])  # noqa: E731
    return evaluate_gate(
        path="synthetic", key="k", reference=lookup(reference), candidate=lookup(candidate), probes=probes,
        class_sets=[_two_class_task()], logit_scale=logit_scale, thresholds=thresholds,
    )


def test_gate_refuses_a_decisive_flip_even_when_cosine_and_probabilities_would_allow_it() -> None:
    lenient = GateThresholds(min_cosine=0.0, max_prob_change=1.0, min_decisive_agreement=0.99)
    angles = np.full(40, 0.6)  # class 0 with a margin of about 0.3 at logit scale 2
    angles[0] = np.pi / 2 - 0.6
    result = _gate(_images_at(np.full(40, 0.6)), _images_at(angles), lenient, logit_scale=2.0)
    assert not result.passed and "decisive top-1 agreement 97.5% < 99%" in result.reason
    assert result.decisive_decisions == 40 and result.decisive_agreement == pytest.approx(0.975)


def test_too_few_decisive_decisions_are_reported_and_agreement_is_not_judged() -> None:
    angles = np.concatenate([np.full(MIN_DECISIVE_DECISIONS - 1, 0.2), np.full(30, np.pi / 4 - 0.002)])
    reference = _images_at(angles)
    result = _gate(reference, reference.copy(), INT8_THRESHOLDS)
    assert result.passed and result.decisive_agreement is None
    assert result.decisive_decisions == MIN_DECISIVE_DECISIONS - 1
    assert "top-1 agreement not judged" in result.note and "not judged" in result.summary()
    # ... and the limits that are judged still refuse a path that moves probabilities.
    moved = _images_at(angles + 0.05)
    refused = _gate(reference, moved, INT8_THRESHOLDS)
    assert not refused.passed and "max |Δp|" in refused.reason and refused.decisive_agreement is None


def test_records_of_the_new_format_round_trip(tmp_path: Path) -> None:
    reference = _images_at(np.full(30, 0.2))
    result = _gate(reference, reference.copy(), INT8_THRESHOLDS)
    records = GateRecords(tmp_path)
    records.store(result)
    assert records.load("k") == result and GATE_FORMAT == 2


# --------------------------------------------------------------------------- real INT8 graphs


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ModelDirectory:
    return open_model_dir(tiny_model_dir, allow_untrained=True)


@pytest.fixture(scope="module")
def int8_setup(model: ModelDirectory, tmp_path_factory):
    """The float32 ONNX Runtime backend, the tiny model's INT8 graph, the probe set and its class sets."""
    from engines.onnx_files import onnx_files_for
    from engines.onnxruntime_backend import OnnxRuntimeBackend
    from engines.quantization import int8_image_graph_for

    work = tmp_path_factory.mktemp("gate-work")
    files = onnx_files_for(model, work)
    graph = int8_image_graph_for(model, files, work)
    reference = OnnxRuntimeBackend(model, work, allow_cuda=False)
    probe_set = PROBES.probe_set(model, work)
    return reference, graph.path, probe_set.images, probe_set.class_sets(reference), work


def _perturbed_scales(source: Path, destination: Path, spread: float, seed: int = 0) -> Path:
    """`source` with every weight quantisation scale multiplied by a random factor in [1 - spread, 1 + spread]."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(source))
    rng = np.random.default_rng(seed)
    damaged = 0
    for index, tensor in enumerate(graph.graph.initializer):
        if tensor.name.endswith("_scale"):
            scale = numpy_helper.to_array(tensor)
            factors = rng.uniform(1.0 - spread, 1.0 + spread, size=scale.shape).astype(scale.dtype)
            graph.graph.initializer[index].CopyFrom(numpy_helper.from_array(scale * factors, tensor.name))
            damaged += 1
    assert damaged > 0, "the INT8 graph has no quantisation scales to perturb"
    onnx.save(graph, str(destination))
    return destination


def _int8_gate(setup, graph_path: Path):
    import onnxruntime as ort

    reference, _, images, class_sets, _ = setup
    session = ort.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    candidate = lambda batch: session.run(None, {"images": batch})[0]  # noqa: E731
    return evaluate_gate(
        path="onnxruntime-int8", key="k", reference=reference.encode_images, candidate=candidate, probes=images,
        class_sets=class_sets, logit_scale=reference.logit_scale, thresholds=INT8_THRESHOLDS,
    )


def test_the_real_int8_graph_is_accepted(int8_setup) -> None:
    result = _int8_gate(int8_setup, int8_setup[1])
    assert result.passed, result.summary()
    assert result.decisions == 56 * 4 and result.min_cosine >= 0.99 and result.max_prob_change <= 0.03


@pytest.mark.parametrize("spread", [0.2, 0.5])
def test_an_int8_graph_with_perturbed_scales_is_refused(int8_setup, tmp_path: Path, spread: float) -> None:
    damaged = _perturbed_scales(int8_setup[1], tmp_path / "damaged.onnx", spread=spread)
    result = _int8_gate(int8_setup, damaged)
    assert not result.passed, result.summary()
    assert "min cosine" in result.reason
    # The random-weight model has no decisive decisions: the refusal rests on the measured error, as it must.
    assert result.decisive_decisions < MIN_DECISIVE_DECISIONS and result.decisive_agreement is None
