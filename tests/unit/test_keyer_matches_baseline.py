"""The fast backdrop keyer gives the same cutouts as the one it replaced (frozen in bench/baseline_keyer.py)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.baseline_keyer import BackdropKeyer as BaselineKeyer
from functions.local.synthetic_photos import render_product_photo
from functions.stages.background.keyer import BackdropKeyer

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
# The white top on white (the hard case) and a coloured one: enough to catch a drift, quick enough for CI.
REAL_PHOTOS = [SAMPLES / name for name in ("09133_00.jpg", "09163_00.jpg") if (SAMPLES / name).is_file()]

PHOTOS = [
    ("tshirt", (196, 28, 36), (246, 246, 244), 11),  # red on white
    ("trousers", (34, 42, 72), (218, 218, 216), 12),  # navy on grey
    ("tshirt", (240, 240, 237), (247, 247, 247), 13),  # white on white, the hard case
]


def _iou(mask: Image.Image, other: Image.Image) -> float:
    found, expected = np.asarray(mask) > 127, np.asarray(other) > 127
    return float((found & expected).sum() / (found | expected).sum())


def _assert_same_cutout(photo: Image.Image) -> None:
    # When both keyers cut it out
    expected = BaselineKeyer().remove(photo)
    result = BackdropKeyer().remove(photo)
    # Then the masks agree (IoU >= 0.99, issue 13's bar; every speed change so far kept them the same pixel for pixel)
    # and the reviewer sees the same confidence and notes
    assert _iou(result.mask, expected.mask) >= 0.99
    assert result.mask.size == expected.mask.size
    assert np.array_equal(np.asarray(result.mask), np.asarray(expected.mask))
    assert (result.confidence, result.low_confidence, result.notes) == (
        expected.confidence,
        expected.low_confidence,
        expected.notes,
    )
    assert result.backdrop_rgb == expected.backdrop_rgb


@pytest.mark.parametrize(("garment", "garment_rgb", "backdrop_rgb", "seed"), PHOTOS, ids=lambda v: str(v))
def test_fast_keyer_matches_the_baseline_on_rendered_photos(garment, garment_rgb, backdrop_rgb, seed):
    # Given a small studio photo of a garment (its shadow included)
    photo = render_product_photo(garment, garment_rgb, backdrop_rgb, size=(240, 320), seed=seed).image
    _assert_same_cutout(photo)


def test_fast_keyer_matches_the_baseline_on_a_photo_larger_than_its_working_size():
    # Given a 1200 x 1600 studio photo: its mask is made at 1024 px and its edge re-estimated at full size
    photo = render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), size=(1200, 1600), seed=21).image
    _assert_same_cutout(photo)


@pytest.mark.samples
@pytest.mark.parametrize("path", REAL_PHOTOS, ids=lambda p: p.name)
def test_fast_keyer_matches_the_baseline_on_real_photos(path: Path):
    # Given a real catalog photo
    with Image.open(path) as image:
        photo = image.convert("RGB")
    _assert_same_cutout(photo)
