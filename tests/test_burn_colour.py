"""The wound map (skin detection and wound colour classes) on synthetic burn photographs with ground truth.

Targets from the burn-specialist issue: wound-mask IoU ≥ 0.8 and wound area within 5 percentage
points of the truth on every photograph of the set (six Fitzpatrick tones, drapes, sheets, black
backgrounds, red/denim/white clothing); background and clothing never counted as wound;
deterministic results; bounded memory for huge photographs.
"""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from operators.specialists.burn.config import load_burn_config
from operators.specialists.burn.wound_colour import FIRST_WOUND_LABEL, WoundMapError, map_wounds
from tests.fixtures_burn import BURN_SCENES, HEALTHY_SCENES, burn_scene

SETTINGS = load_burn_config().colour


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


@pytest.mark.parametrize("name", BURN_SCENES)
def test_wound_mask_iou_and_area_meet_the_targets(name):
    photo = burn_scene(name, seed=BURN_SCENES.index(name))
    wound = map_wounds(photo.rgb, SETTINGS)
    score = iou(wound.wound_mask, photo.wound_mask)
    assert score >= 0.8, f"{name}: wound-mask IoU {score:.3f}"
    assert wound.wound_percent_of_skin == pytest.approx(photo.wound_percent, abs=5.0), name


def test_the_whole_set_meets_the_targets_on_average_with_margin(synthetic_burns):
    """Mean figures of the set, so a regression shows before a single photograph fails."""
    scores, errors = [], []
    for photo in synthetic_burns:
        wound = map_wounds(photo.rgb, SETTINGS)
        scores.append(iou(wound.wound_mask, photo.wound_mask))
        errors.append(abs(wound.wound_percent_of_skin - photo.wound_percent))
    assert np.mean(scores) >= 0.9 and max(errors) <= 5.0, (scores, errors)


def test_background_and_clothing_are_never_counted_as_wound(synthetic_burns):
    """Only the anti-aliased edge of the skin (1-2 pixels) may be misassigned, never a region beyond it."""
    for photo in synthetic_burns:
        wound = map_wounds(photo.rgb, SETTINGS)
        skin = (photo.truth != 0).astype(np.uint8)
        distance = cv2.distanceTransform(1 - skin, cv2.DIST_L2, 3)
        outside = wound.wound_mask & photo.not_skin_mask
        assert not outside.any() or distance[outside].max() <= 2.0, f"{photo.name}: wound counted on background/clothing"


def test_each_wound_class_is_recognised(synthetic_burns):
    """Per class over the set: the painted class is the class found (IoU ≥ 0.6)."""
    found: dict[int, list[float]] = {}
    for photo in synthetic_burns:
        wound = map_wounds(photo.rgb, SETTINGS)
        for label in range(FIRST_WOUND_LABEL, FIRST_WOUND_LABEL + len(SETTINGS.classes)):
            truth = photo.truth == label
            if truth.sum() > 500:
                found.setdefault(label, []).append(iou(wound.labels == label, truth))
    assert len(found) == len(SETTINGS.classes), "every wound class is painted somewhere in the set"
    for label, scores in found.items():
        key = SETTINGS.classes[label - FIRST_WOUND_LABEL].key
        assert np.mean(scores) >= 0.6, f"{key}: mean IoU {np.mean(scores):.2f}"


@pytest.mark.parametrize("name", list(HEALTHY_SCENES))
def test_healthy_skin_shows_no_wound(name):
    photo = burn_scene(name, seed=1)
    wound = map_wounds(photo.rgb, SETTINGS)
    assert wound.skin_found
    assert wound.wound_percent_of_skin < 1.0


def test_results_are_deterministic():
    photo = burn_scene(BURN_SCENES[0], seed=0)
    first = map_wounds(photo.rgb, SETTINGS)
    second = map_wounds(photo.rgb.copy(), SETTINGS)
    assert np.array_equal(first.labels, second.labels)
    assert first.class_pixels == second.class_pixels and first.skin_pixels == second.skin_pixels


def test_an_all_black_image_has_no_skin_and_measures_nothing():
    wound = map_wounds(np.zeros((480, 640, 3), np.uint8), SETTINGS)
    assert not wound.skin_found
    assert wound.wound_percent_of_skin is None and wound.wound_pixels == 0


def test_a_photograph_of_a_drape_only_has_no_skin():
    photo = burn_scene(BURN_SCENES[0], seed=0)
    drape = np.empty_like(photo.rgb)
    drape[:] = (70, 95, 140)
    assert not map_wounds(drape, SETTINGS).skin_found


def test_a_tiny_image_gives_a_result_without_crashing():
    wound = map_wounds(burn_scene(BURN_SCENES[0], seed=0).rgb[::60, ::80].copy(), SETTINGS)
    assert wound.labels.shape == (8, 8)


def test_arrays_that_are_not_8_bit_rgb_are_refused():
    with pytest.raises(WoundMapError, match="8-bit RGB"):
        map_wounds(np.zeros((64, 64), np.uint8), SETTINGS)
    with pytest.raises(WoundMapError, match="8-bit RGB"):
        map_wounds(np.zeros((64, 64, 3), np.uint16), SETTINGS)


def test_a_10k_image_is_analysed_on_a_bounded_copy():
    """A 10000 × 10000 photograph (300 MB) is analysed at 1024 px: little memory beyond the input itself."""
    photo = burn_scene(BURN_SCENES[0], seed=0, width=1000, height=1000)
    huge = np.repeat(np.repeat(photo.rgb, 10, axis=0), 10, axis=1)
    tracemalloc.start()
    try:
        wound = map_wounds(huge, SETTINGS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del huge
    assert max(wound.labels.shape) == SETTINGS.analysis_max_side
    assert peak < 120 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    small = map_wounds(photo.rgb, SETTINGS)
    assert wound.wound_percent_of_skin == pytest.approx(small.wound_percent_of_skin, abs=1.0)
