"""The independent evaluation set of the wound map (bench/burn_scenes.py) and its benchmark (bench/burn.py)."""

from __future__ import annotations

import numpy as np

from bench.burn import accuracy
from bench.burn_scenes import MONK_SWATCHES, TONES, WOUND_CLASSES, ita_class, make_scene, scene_seeds, split_of


def test_ita_classes_follow_the_published_bounds():
    assert ita_class((72, 7, 13)) == "very light"  # 59°
    assert ita_class((61, 11, 17)) == "intermediate"  # 33°
    assert ita_class((33, 11, 14)) == "dark"  # −51°
    assert [t.ita_class for t in TONES if t.palette == "ITA"] == [t.name for t in TONES if t.palette == "ITA"]
    assert len([t for t in TONES if t.palette == "Monk"]) == len(MONK_SWATCHES) == 10


def test_scenes_are_seeded_and_the_truth_is_exact():
    first, again = make_scene(5), make_scene(5)
    assert np.array_equal(first.rgb, again.rgb) and np.array_equal(first.truth, again.truth)
    assert set(np.unique(first.truth)) <= set(range(2 + len(WOUND_CLASSES)))
    assert first.rgb.shape == (480, 640, 3) and first.truth.shape == (480, 640)


def test_both_halves_hold_every_tone_and_condition():
    for split in ("dev", "held-out"):
        seeds = scene_seeds(192, split)
        assert all(split_of(s) == split for s in seeds)
        pairs = {((s // 2) % len(TONES), (s // 32) % 6) for s in seeds}
        assert len(pairs) == len(TONES) * 6


def test_healthy_controls_have_no_wound_and_some_lie_beside_red_clothing():
    healthy = [make_scene(s) for s in (10, 11, 20, 21)]
    assert all(scene.burn is None and not scene.wound_mask.any() for scene in healthy)
    assert {scene.background for scene in healthy[2:]} == {"red clothing"}


def test_the_benchmark_scores_photographs_and_checks_the_targets():
    document = accuracy("held-out", 4)
    assert document["overall"]["photographs"] == 2
    assert set(document["meets_targets"]) == set(document["targets"])
    for row in document["photographs"]:
        assert 0.0 <= row["iou"] <= 1.0
