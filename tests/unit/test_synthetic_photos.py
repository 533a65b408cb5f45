"""Synthetic studio photos: believable enough for the demo, exact enough to be ground truth."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from functions.local.synthetic_photos import GARMENTS, compose_on_backdrop, render_product_photo, write_example_photos
from schemas import ProductSidecar


def test_same_seed_gives_the_same_pixels_and_another_seed_does_not():
    # Given two renders with one seed and one with another
    first = render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), size=(300, 400), seed=7)
    again = render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), size=(300, 400), seed=7)
    other = render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), size=(300, 400), seed=8)
    # Then the same seed reproduces every byte, and a new seed makes a different photo
    assert first.image.tobytes() == again.image.tobytes()
    assert first.product_mask.tobytes() == again.product_mask.tobytes()
    assert first.image.tobytes() != other.image.tobytes()


@pytest.mark.parametrize("garment", GARMENTS)
def test_every_garment_has_a_binary_mask_inside_the_frame_with_a_margin(garment):
    # When a garment is rendered
    photo = render_product_photo(garment, (34, 42, 72), (230, 230, 230), size=(600, 800), seed=1)
    mask = np.asarray(photo.product_mask)
    # Then the image is RGB, the mask is a binary "L" image of the same size
    assert photo.image.mode == "RGB" and photo.product_mask.mode == "L"
    assert photo.image.size == photo.product_mask.size == (600, 800)
    assert set(np.unique(mask)) == {0, 255}
    # And the garment fills a good part of the frame but stays clear of its edges
    assert 0.1 < (mask == 255).mean() < 0.8
    margin = 24  # 3% of the short side
    assert not mask[:margin].any() and not mask[-margin:].any()
    assert not mask[:, :margin].any() and not mask[:, -margin:].any()


def test_the_mask_covers_the_garment_colour_and_the_backdrop_is_a_gradient():
    # Given a navy garment on a light grey sweep
    photo = render_product_photo("trousers", (34, 42, 72), (220, 220, 218), size=(600, 800), seed=2)
    pixels = np.asarray(photo.image).astype(np.float32)
    inside = np.asarray(photo.product_mask) == 255
    # Then the masked pixels are the garment's colour and the rest the backdrop's
    assert np.abs(pixels[inside].mean(axis=0) - (34, 42, 72)).max() < 15
    assert np.abs(np.median(pixels[~inside], axis=0) - (220, 220, 218)).max() < 15
    # And the sweep is not one flat colour: its top is lighter than its bottom corners
    assert pixels[:40].mean() > pixels[-40:, :40].mean() + 3


def test_a_shadow_only_darkens_the_backdrop_beside_the_garment():
    # Given the same photo with and without its shadow, without noise
    shaded = render_product_photo("dress", (118, 140, 112), (242, 222, 222), size=(600, 800), seed=3, noise_sigma=0)
    flat = render_product_photo(
        "dress", (118, 140, 112), (242, 222, 222), size=(600, 800), seed=3, noise_sigma=0, shadow=False
    )
    difference = np.asarray(flat.image).astype(int) - np.asarray(shaded.image).astype(int)
    inside = np.asarray(shaded.product_mask) == 255
    # (the garment's own anti-aliased rim is part backdrop, so look 2 px in)
    solid = np.asarray(shaded.product_mask.filter(ImageFilter.MinFilter(5))) == 255
    # Then the shadow darkens (never lightens) a real area of backdrop, and leaves the garment alone
    assert difference.min() >= 0
    assert (difference.max(axis=2)[~inside] >= 4).sum() > 5000
    assert difference[solid].max() == 0


def test_compose_places_a_cutout_and_takes_its_alpha_as_truth():
    # Given an RGBA cutout: an opaque square with a half-transparent border
    cutout = np.zeros((100, 80, 4), np.uint8)
    cutout[..., :3] = (200, 30, 30)
    cutout[10:90, 10:70, 3] = 255
    cutout[5:10, 10:70, 3] = 100  # below the 127 cut: not product
    # When it is placed at (50, 60)
    photo = compose_on_backdrop(Image.fromarray(cutout, "RGBA"), (240, 240, 240), (300, 300), (50, 60), seed=0)
    mask = np.asarray(photo.product_mask)
    # Then the truth is exactly the opaque part, where it was put
    assert (mask == 255).sum() == 80 * 60
    assert mask[60 + 10, 50 + 10] == 255 and mask[60 + 7, 50 + 20] == 0


def test_compose_refuses_a_cutout_that_leaves_the_frame():
    cutout = Image.new("RGBA", (100, 100), (0, 0, 0, 255))
    with pytest.raises(ValueError, match="does not fit"):
        compose_on_backdrop(cutout, (240, 240, 240), (300, 300), (250, 10), seed=0)


def test_an_unknown_garment_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="tshirt"):
        render_product_photo("scarf", (1, 2, 3), (4, 5, 6))


def test_example_folder_is_a_valid_merchandiser_intake_and_reproducible(tmp_path: Path):
    # When the examples are written twice
    photos = write_example_photos(tmp_path / "a")
    again = write_example_photos(tmp_path / "b")
    # Then there are SKU folders with a photo and a valid product.json each, plus one loose photo
    sku_dirs = sorted(p for p in (tmp_path / "a").iterdir() if p.is_dir())
    assert len(sku_dirs) >= 3
    for sku_dir in sku_dirs:
        assert (sku_dir / "front.jpg") in photos
        sidecar = ProductSidecar.model_validate_json((sku_dir / "product.json").read_text(encoding="utf-8"))
        assert sidecar.title
    loose = [p for p in photos if p.parent == tmp_path / "a"]
    assert len(loose) == 1
    # And each photo is a ~1200x1600 JPEG, byte for byte the same on both runs
    for photo, twin in zip(photos, again, strict=True):
        with Image.open(photo) as image:
            assert image.format == "JPEG" and image.size == (1800, 2400)
        assert photo.read_bytes() == twin.read_bytes()
    # And the hard case is there: a white garment on a white backdrop
    colours = {ProductSidecar.model_validate_json((d / "product.json").read_text()).colour for d in sku_dirs}
    assert "white" in colours
