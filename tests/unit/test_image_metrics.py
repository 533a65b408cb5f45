"""Pixel metrics shared by the automatic checks and `catalog compare`: each one moves the way a person would expect
when the product is kept, recoloured, reshaped, moved, blurred or badly exposed."""

import numpy as np
import pytest

from functions.stages.image_metrics import (
    METRICS,
    garment_delta_e,
    image_sanity,
    locate_product,
    metric_warnings,
    product_fidelity,
    region_differences,
    silhouette_iou,
)

SIZE = 96


def placed_product() -> np.ndarray:
    """An RGBA canvas with a textured red 'garment' (an ellipse) placed near the bottom."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    inside = ((xx - 48) ** 2 / 20**2 + (yy - 58) ** 2 / 26**2) <= 1
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 0] = 170 + (xx % 9) * 8
    rgba[..., 1] = 30 + (yy % 7) * 9
    rgba[..., 2] = 50
    rgba[..., 3] = np.where(inside, 255, 0)
    return rgba


def scene(seed: int = 0) -> np.ndarray:
    """A greenish, textured background: clearly not the garment."""
    rng = np.random.default_rng(seed)
    base = np.zeros((SIZE, SIZE, 3), np.uint8)
    base[..., 1] = 150
    base[..., 2] = 120
    return np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)


def composed(placed: np.ndarray, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    output = scene()
    mask = np.roll(placed[..., 3] >= 128, shift, (0, 1))
    output[mask] = np.roll(placed[..., :3], shift, (0, 1))[mask]
    return output


def test_an_output_that_keeps_the_product_scores_as_kept() -> None:
    placed = placed_product()
    output = composed(placed)

    location = locate_product(output, placed)
    metrics = product_fidelity(output, location)

    assert location.moved is False
    assert metrics["product_pixels_preserved"] == 1.0
    assert metrics["garment_delta_e"] == 0.0
    assert metrics["silhouette_iou"] > 0.9
    assert metric_warnings(metrics) == []


def test_a_recoloured_product_loses_kept_pixels_and_gains_delta_e() -> None:
    placed = placed_product()
    output = composed(placed)
    mask = placed[..., 3] >= 128
    output[mask] = np.clip(output[mask].astype(int) + np.array([-40, 30, 30]), 0, 255).astype(np.uint8)

    metrics = product_fidelity(output, locate_product(output, placed))

    assert metrics["product_pixels_preserved"] == 0.0
    assert metrics["garment_delta_e"] > 5
    assert "colour_shift" in metric_warnings(metrics)


def test_a_moved_product_is_found_where_it_is() -> None:
    placed = placed_product()
    output = composed(placed, shift=(-9, 7))  # 9 px up, 7 px right

    location = locate_product(output, placed)
    metrics = product_fidelity(output, location)

    assert location.moved is True and location.scale == 1.0
    assert metrics["product_pixels_preserved"] == 1.0
    assert metrics["garment_delta_e"] == 0.0


def test_a_product_missing_from_the_image_is_not_found_kept() -> None:
    placed = placed_product()
    metrics = product_fidelity(scene(), locate_product(scene(), placed))
    assert metrics["product_pixels_preserved"] < 0.1
    assert metrics["garment_delta_e"] > 20


def test_silhouette_iou_drops_when_the_outline_changes() -> None:
    placed = placed_product()
    expected = placed[..., 3] >= 128
    output = composed(placed)
    cut = output.copy()
    cut[58:, :] = scene()[58:, :]  # the garment's lower half painted over

    assert silhouette_iou(output, expected) > 0.9
    assert silhouette_iou(cut, expected) < 0.7


def test_delta_e_of_a_just_noticeable_shift() -> None:
    reference = np.full((4, 4, 3), (120, 80, 60), np.uint8)
    shifted = np.full((4, 4, 3), (123, 80, 60), np.uint8)
    mask = np.ones((4, 4), bool)
    assert 0.5 < garment_delta_e(shifted, reference, mask) < 2.3


def test_sharpness_and_exposure() -> None:
    sharp = scene()
    flat = np.full_like(sharp, 128)
    burnt = np.full_like(sharp, 255)

    assert image_sanity(sharp)["sharpness"] > 15 > image_sanity(flat)["sharpness"]
    assert "blurry" in metric_warnings(image_sanity(flat))
    assert image_sanity(burnt)["exposure_clipped"] == 1.0
    assert "badly_exposed" in metric_warnings(image_sanity(burnt))
    assert image_sanity(sharp)["exposure_clipped"] == 0.0


def test_region_differences_is_the_checks_comparison() -> None:
    expected = np.zeros((8, 8, 3), np.uint8)
    output = expected.copy()
    output[2, 5] = (0, 30, 0)
    region = np.ones((8, 8), bool)

    found = region_differences(output, expected, region, tolerance=2)

    assert found is not None and (found.changed, found.checked, found.largest, found.at) == (1, 64, 30, (5, 2))
    assert region_differences(output, expected, region, tolerance=30) is None


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_says_what_it_rests_on(name: str) -> None:
    spec = METRICS[name]
    assert spec.source.split(":")[0] in ("pixels", "embedding model", "classifier", "timing", "price table")


def test_silhouette_iou_does_not_depend_on_what_ran_before() -> None:
    import cv2

    placed = placed_product()
    output = composed(placed)
    expected = placed[..., 3] >= 128
    first = silhouette_iou(output, expected)
    for seed in range(5):  # whatever else moved OpenCV's global random state in between
        cv2.setRNGSeed(seed)
        cv2.randu(np.zeros((8, 8), np.float32), np.zeros(1), np.ones(1))
        assert silhouette_iou(output, expected) == first
