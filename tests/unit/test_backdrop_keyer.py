"""The backdrop keyer against rendered photos with a known mask, and against real studio photos."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from functions.errors import BackgroundRemovalError
from functions.local.synthetic_photos import compose_on_backdrop, render_product_photo
from functions.stages.background.keyer import BackdropKeyer

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
GARMENT_SAMPLES = sorted(SAMPLES.glob("0*.jpg")) if SAMPLES.is_dir() else []

KEYER = BackdropKeyer()

COLOURED_ON_BACKDROPS = [
    ("tshirt", (196, 28, 36), (246, 246, 244)),  # red on white
    ("trousers", (34, 42, 72), (218, 218, 216)),  # navy on grey
    ("dress", (118, 140, 112), (242, 222, 222)),  # sage on pale pink
    ("hoodie", (92, 94, 98), (245, 245, 245)),  # charcoal on white: shadow and garment are both grey
    ("dress", (40, 40, 40), (250, 250, 250)),  # black on white
]


def _iou(mask: Image.Image, truth: Image.Image) -> float:
    found, real = np.asarray(mask) > 127, np.asarray(truth) > 127
    return float((found & real).sum() / (found | real).sum())


def _shadow_region(garment, garment_rgb, backdrop_rgb, seed) -> np.ndarray:
    """Backdrop pixels the garment's shadow darkens visibly (the same render with and without it)."""
    shaded = render_product_photo(garment, garment_rgb, backdrop_rgb, seed=seed, noise_sigma=0)
    flat = render_product_photo(garment, garment_rgb, backdrop_rgb, seed=seed, noise_sigma=0, shadow=False)
    darkening = np.asarray(flat.image).astype(int) - np.asarray(shaded.image).astype(int)
    return (darkening.max(axis=2) >= 4) & (np.asarray(shaded.product_mask) == 0)


@pytest.mark.parametrize(("garment", "garment_rgb", "backdrop_rgb"), COLOURED_ON_BACKDROPS)
def test_coloured_garments_are_cut_out_without_their_shadow(garment, garment_rgb, backdrop_rgb):
    # Given a studio photo with a soft shadow, a sweep gradient and sensor noise
    photo = render_product_photo(garment, garment_rgb, backdrop_rgb, seed=11)
    shadow = _shadow_region(garment, garment_rgb, backdrop_rgb, seed=11)
    assert shadow.sum() > 50_000  # the shadow is big enough to matter
    # When the backdrop is keyed out
    result = KEYER.remove(photo.image)
    # Then the mask matches the truth closely, leaves the shadow out, and is confident
    assert _iou(result.mask, photo.product_mask) >= 0.97
    assert (np.asarray(result.mask)[shadow] > 127).mean() < 0.02
    assert not result.low_confidence
    assert result.confidence > 0.5
    assert result.engine == "backdrop"


def test_white_on_white_is_cut_out_roughly_and_flagged_for_a_look():
    # Given the hard case: a white T-shirt on a white sweep
    photo = render_product_photo("tshirt", (238, 238, 235), (247, 247, 247), seed=5)
    # When it is keyed
    result = KEYER.remove(photo.image)
    # Then the cutout is usable but the result says so honestly
    assert _iou(result.mask, photo.product_mask) >= 0.93
    assert result.low_confidence
    assert result.confidence < 0.5
    assert any("contrast" in note and "ΔE" in note for note in result.notes)


def test_a_red_shirt_on_white_is_not_flagged():
    photo = render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), seed=5)
    result = KEYER.remove(photo.image)
    assert not result.low_confidence
    assert result.notes == ()


def test_a_white_print_inside_a_dark_shirt_stays_in_the_mask():
    # Given a dark shirt with a large print exactly the backdrop's colour in its middle
    photo = render_product_photo("tshirt", (30, 30, 40), (246, 246, 246), seed=1)
    pixels = np.asarray(photo.image).copy()
    ys, xs = np.nonzero(np.asarray(photo.product_mask))
    cy, cx = int(ys.mean()), int(xs.mean())
    pixels[cy - 80 : cy + 80, cx - 120 : cx + 120] = 246
    # When it is keyed
    result = KEYER.remove(Image.fromarray(pixels))
    # Then the print is product: it is not connected to the backdrop around the shirt
    assert (np.asarray(result.mask)[cy - 80 : cy + 80, cx - 120 : cx + 120] > 127).all()


def test_the_mask_is_the_image_size_and_softened_only_at_the_edge():
    # Given a photo of an odd size (not a multiple of the working scale)
    photo = render_product_photo("dress", (118, 140, 112), (242, 222, 222), size=(1333, 1777), seed=2)
    # When it is keyed
    mask = KEYER.remove(photo.image).mask
    values = np.asarray(mask)
    # Then the mask is an "L" image aligned with the photo
    assert mask.mode == "L" and mask.size == photo.image.size
    # And it is feathered: some soft values, all of them within a few pixels of the true edge
    soft = (values > 0) & (values < 255)
    assert soft.sum() > 1000
    truth = np.asarray(photo.product_mask) > 127
    edge_distance = np.minimum(
        cv2.distanceTransform(truth.astype(np.uint8), cv2.DIST_L2, 3),
        cv2.distanceTransform((~truth).astype(np.uint8), cv2.DIST_L2, 3),
    )
    assert edge_distance[soft].max() <= 6


def test_a_blank_backdrop_has_no_product():
    # Given a sweep with nothing on it
    nothing = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    blank = compose_on_backdrop(nothing, (240, 240, 240), (900, 1200), (0, 0), seed=3)
    # When it is keyed, Then the error says why in words that read well after a file name
    with pytest.raises(BackgroundRemovalError) as caught:
        KEYER.remove(blank.image)
    assert caught.value.code == "no_product_found"
    assert caught.value.message.startswith("nothing stands out from the backdrop")


def test_a_busy_scene_is_refused_with_a_pointer_to_rembg():
    # Given a photo whose border is not a backdrop at all
    rng = np.random.default_rng(0)
    busy = np.kron(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8), np.ones((40, 40, 1), np.uint8))
    # When it is keyed, Then it is refused, and the message names the engine that can do it
    with pytest.raises(BackgroundRemovalError) as caught:
        KEYER.remove(Image.fromarray(busy))
    assert caught.value.code == "no_backdrop"
    assert "--background rembg" in caught.value.message


def test_transparent_pixels_of_an_rgba_photo_are_background():
    # Given a studio photo whose left quarter has been made transparent
    photo = render_product_photo("dress", (118, 140, 112), (242, 222, 222), seed=3)
    rgba = np.asarray(photo.image.convert("RGBA")).copy()
    rgba[:, :400, 3] = 0
    # When it is keyed
    result = KEYER.remove(Image.fromarray(rgba, "RGBA"))
    mask = np.asarray(result.mask)
    # Then nothing transparent is product, and the product is still found
    assert mask[:, :400].max() == 0
    truth = np.asarray(photo.product_mask).copy()
    truth[:, :400] = 0
    assert _iou(result.mask, Image.fromarray(truth)) >= 0.97


def test_an_image_that_is_already_cut_out_keeps_its_own_transparency():
    # Given an RGBA cutout whose whole border is transparent
    photo = render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), size=(600, 800), seed=4)
    rgba = photo.image.convert("RGBA")
    rgba.putalpha(photo.product_mask)
    # When it is keyed, Then its alpha is the mask
    result = KEYER.remove(rgba)
    assert _iou(result.mask, photo.product_mask) > 0.99
    assert result.backdrop_rgb is None


@pytest.mark.samples
@pytest.mark.parametrize("path", GARMENT_SAMPLES, ids=lambda p: p.name)
def test_real_garment_photos_give_one_plausible_product(path: Path):
    # Given a real catalog photo of a garment on a light studio backdrop
    with Image.open(path) as image:
        photo = image.convert("RGB")
    # When it is keyed
    result = KEYER.remove(photo)
    product = (np.asarray(result.mask) > 127).astype(np.uint8)
    # Then one main piece covers a plausible share of the frame, and the frame's edge is background
    count, _, stats, _ = cv2.connectedComponentsWithStats(product, connectivity=8)
    areas = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1]
    assert count > 1
    assert areas[0] >= 0.99 * product.sum()
    assert 0.15 <= areas[0] / product.size <= 0.85
    assert not product[:3].any() and not product[-3:].any()
    assert not product[:, :3].any() and not product[:, -3:].any()
    # And only the white top on white is flagged as low contrast
    assert result.low_confidence == (path.name == "09133_00.jpg")
