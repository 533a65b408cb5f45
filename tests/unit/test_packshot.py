"""Packshots: exact white, centred at the fill ratio, no halos, a shadow that stays under the product,
and quality flags that fire on the masks they describe and stay quiet on a clean one."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from functions.encoding import encode_image
from functions.errors import CatalogError
from functions.stages.background import make_cutout
from functions.stages.packshot import (
    MASK_NOISE_FLOOR,
    Packshot,
    PackshotPreset,
    PackshotSettings,
    _over_background,
    _premultiplied_cutout,
    compose_packshot,
    quality_checks,
)
from schemas import Box, Severity

RED = (200, 30, 40)


# -- scenes ------------------------------------------------------------------------------------------------


def studio_photo(
    size: tuple[int, int] = (900, 1200),
    product: tuple[int, int, int, int] = (250, 200, 650, 1000),
    *,
    colour: tuple[int, int, int] = RED,
    soft_edge: float = 2.0,
    seed: int = 0,
) -> tuple[Image.Image, Image.Image]:
    """A garment-like ellipse on a noisy near-white backdrop, and its soft mask with sub-floor noise.

    The backdrop is what a bad composite would leak (near-white, never exactly 255); the mask carries
    values 1..8 across the backdrop, as real keyers and segmenters do.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    backdrop = rng.integers(232, 251, (height, width, 3), dtype=np.uint8)
    photo = Image.fromarray(backdrop, "RGB")
    ImageDraw.Draw(photo).ellipse(product, fill=colour)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(product, fill=255)
    if soft_edge:
        mask = mask.filter(ImageFilter.GaussianBlur(soft_edge))
    noise = rng.integers(0, 9, (height, width), dtype=np.uint8)
    mask = Image.fromarray(np.maximum(np.asarray(mask), noise), "L")
    return photo, mask


def blank_mask(size: tuple[int, int] = (1000, 1000)) -> Image.Image:
    return Image.new("L", size, 0)


def with_blobs(mask: Image.Image, *boxes: tuple[int, int, int, int]) -> Image.Image:
    mask = mask.copy()
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        draw.rectangle(box, fill=255)
    return mask


def outside(box: Box, canvas: int) -> np.ndarray:
    """Boolean canvas mask: True outside the placement box."""
    inside = np.zeros((canvas, canvas), dtype=bool)
    inside[box.top : box.bottom, box.left : box.right] = True
    return ~inside


def drawn_extent(image: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box of the pixels that are not pure white (or, for RGBA, not fully transparent)."""
    array = np.asarray(image)
    drawn = np.asarray(array[..., 3] > 0 if image.mode == "RGBA" else (array < 255).any(axis=2))
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def difference_from_lanczos(photo: Image.Image, mask: Image.Image, packshot: Packshot) -> np.ndarray:
    """Per-pixel |difference| between the packshot's product and Pillow's own Lanczos resize of the same cutout,
    alpha-composited on white: what a straightforward packshot would look like."""
    box = packshot.placement
    crop = mask.getbbox()
    assert crop is not None
    cutout = photo.crop(crop)
    cutout.putalpha(mask.crop(crop))
    resized = cutout.resize((box.right - box.left, box.bottom - box.top), Image.Resampling.LANCZOS)
    expected = Image.alpha_composite(Image.new("RGBA", resized.size, (255, 255, 255, 255)), resized)
    ours = np.asarray(packshot.image.crop((box.left, box.top, box.right, box.bottom)), dtype=np.int16)
    return np.abs(ours - np.asarray(expected.convert("RGB"), dtype=np.int16))


SMALL = PackshotSettings(size=600)


# -- white square ------------------------------------------------------------------------------------------


def test_white_background_is_exactly_255_outside_the_product():
    # Given a product on a near-white, noisy backdrop, with a mask that carries faint noise
    photo, mask = studio_photo()
    # When a white-square packshot is made
    packshot = compose_packshot(photo, mask, SMALL)
    canvas = np.asarray(packshot.image)
    assert packshot.image.mode == "RGB" and packshot.image.size == (600, 600)
    # Then every pixel outside the placement box is exactly white...
    assert (canvas[outside(packshot.placement, 600)] == 255).all()
    # ...and so is the backdrop inside the box, beside the (elliptical) product: the cutout's alpha decides
    box = packshot.placement
    for corner_rows, corner_cols in [
        (slice(box.top, box.top + 20), slice(box.left, box.left + 20)),
        (slice(box.bottom - 20, box.bottom), slice(box.right - 20, box.right)),
    ]:
        assert (canvas[corner_rows, corner_cols] == 255).all()


def test_product_keeps_its_colour():
    photo, mask = studio_photo()
    canvas = np.asarray(compose_packshot(photo, mask, SMALL).image)
    assert tuple(canvas[300, 300]) == RED


@pytest.mark.parametrize(
    ("photo_size", "product", "size", "fill_ratio"),
    [
        ((900, 1200), (250, 200, 650, 1000), 600, 0.85),  # portrait, downscaled
        ((1200, 900), (100, 300, 1100, 700), 600, 0.85),  # landscape
        ((900, 1200), (10, 30, 411, 831), 2000, 0.9),  # upscaled, off-centre in the photo
        ((800, 800), (300, 300, 500, 500), 777, 1.0),  # odd canvas, full fill
        ((800, 800), (100, 350, 700, 451), 512, 0.5),  # very flat
    ],
)
def test_product_is_centred_at_the_fill_ratio_with_its_aspect_kept(photo_size, product, size, fill_ratio):
    # Given a product whose bounding box is known
    photo, mask = studio_photo(photo_size, product, soft_edge=0)
    source_w, source_h = product[2] - product[0] + 1, product[3] - product[1] + 1
    settings = PackshotSettings(size=size, fill_ratio=fill_ratio)
    # When the packshot is made
    packshot = compose_packshot(photo, mask, settings)
    box = packshot.placement
    width, height = box.right - box.left, box.bottom - box.top
    # Then its longer side is fill_ratio * size
    assert abs(max(width, height) - fill_ratio * size) <= 1
    # and it is centred
    assert abs((box.left + box.right) / 2 - size / 2) <= 1
    assert abs((box.top + box.bottom) / 2 - size / 2) <= 1
    # and its aspect ratio is the source's, to the pixel
    assert abs(width - source_w * packshot.scale) <= 1 and abs(height - source_h * packshot.scale) <= 1
    assert packshot.scale == pytest.approx(max(width, height) / max(source_w, source_h))
    # and the product is drawn where the placement says (Lanczos may ring a pixel or two past its edge)
    drawn = drawn_extent(packshot.image)
    assert all(abs(a - b) <= 2 for a, b in zip(drawn, (box.left, box.top, box.right, box.bottom), strict=True))


def test_specks_do_not_move_or_shrink_the_product():
    # Given the same product, once with a clean mask and once with a speck of dust far away in a corner
    photo, mask = studio_photo()
    dusty = with_blobs(mask, (5, 5, 9, 9))
    # When both are composed
    clean_shot, dusty_shot = compose_packshot(photo, mask, SMALL), compose_packshot(photo, dusty, SMALL)
    # Then the framing is the same and the speck is not on the canvas
    assert dusty_shot.placement == clean_shot.placement
    np.testing.assert_array_equal(np.asarray(dusty_shot.image), np.asarray(clean_shot.image))


def test_no_dark_halo_around_a_white_cutout_on_white():
    # Given a white product cut out on a transparent layer whose hidden colour is black (as many editors
    # export it), with a crisp edge: resampling straight (not premultiplied) colour turns that edge grey
    alpha = Image.new("L", (1000, 1000), 0)
    ImageDraw.Draw(alpha).ellipse((200, 150, 800, 850), fill=255)
    white = np.where(np.asarray(alpha)[..., None] > 0, 255, 0).astype(np.uint8).repeat(3, axis=2)
    cutout = Image.fromarray(white, "RGB")
    cutout.putalpha(alpha)
    # When it is shrunk a lot onto a white square (edge pixels mix product and hidden black)
    packshot = compose_packshot(cutout, alpha, PackshotSettings(size=200))
    # Then no pixel darkens: premultiplied resampling never borrows the hidden black
    assert np.asarray(packshot.image).min() >= 250
    assert packshot.placement.right - packshot.placement.left < 200  # it really was resampled
    # And on the transparent preset, semi-transparent edge pixels are still white, not grey
    transparent = np.asarray(
        compose_packshot(cutout, alpha, PackshotSettings(size=200, preset=PackshotPreset.TRANSPARENT)).image
    )
    edge = transparent[..., 3] >= 16
    assert transparent[edge][:, :3].min() >= 240


def test_soft_edges_blend_into_white_as_an_alpha_composite_would():
    # Given a red product with soft edges, whose bounding box is known
    product = (100, 80, 500, 720)
    photo, mask = studio_photo((600, 800), product, soft_edge=0)
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse(product, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(3))
    mask = Image.fromarray(np.where(np.asarray(mask) > 8, np.asarray(mask), 0).astype(np.uint8), "L")
    # When the packshot is made
    packshot = compose_packshot(photo, mask, SMALL)
    # Then its pixels match Pillow's own resize-then-alpha-composite of the same cutout, edges included
    assert difference_from_lanczos(photo, mask, packshot).max() <= 3


def test_an_enlarged_product_looks_as_a_lanczos_enlargement_would():
    # Given a small photo whose product must be enlarged about 3x to fill the packshot (enlargement takes the
    # bicubic path; shrinking keeps Lanczos)
    product = (20, 16, 180, 244)
    photo, mask = studio_photo((200, 260), product, soft_edge=1.5, seed=3)
    mask = Image.fromarray(np.where(np.asarray(mask) > 8, np.asarray(mask), 0).astype(np.uint8), "L")
    # When the packshot is made
    packshot = compose_packshot(photo, mask, PackshotSettings(size=800))
    box = packshot.placement
    assert box.bottom - box.top > 2.5 * (product[3] - product[1])
    # Then it is within a few grey levels of Pillow's Lanczos resize-then-alpha-composite of the same cutout
    difference = difference_from_lanczos(photo, mask, packshot)
    assert difference.mean() <= 1.0
    assert np.percentile(difference, 99) <= 6
    # And everything outside the product is still exactly white
    assert (np.asarray(packshot.image)[outside(box, 800)] == 255).all()


# -- transparent -------------------------------------------------------------------------------------------


def test_transparent_preset_is_rgba_png_with_a_clean_empty_background():
    # Given a product on a noisy backdrop
    photo, mask = studio_photo()
    settings = PackshotSettings(preset=PackshotPreset.TRANSPARENT, size=600)
    # When a transparent packshot is made and encoded with the preset's default format
    packshot = compose_packshot(photo, mask, settings)
    canvas = np.asarray(packshot.image)
    decoded = Image.open(io.BytesIO(encode_image(packshot.image, settings.resolved_format)))
    # Then it is an RGBA PNG
    assert settings.resolved_format == "png"
    assert packshot.image.mode == "RGBA" and decoded.format == "PNG" and decoded.mode == "RGBA"
    # with alpha exactly 0 outside the product box, and beside the ellipse inside it
    assert (canvas[outside(packshot.placement, 600)][:, 3] == 0).all()
    box = packshot.placement
    assert (canvas[box.top : box.top + 20, box.left : box.left + 20, 3] == 0).all()
    # every fully transparent pixel is (0, 0, 0, 0), so the bytes do not depend on hidden backdrop colour
    assert (canvas[canvas[..., 3] == 0] == 0).all()
    # and the product itself is opaque and keeps its colour
    assert tuple(canvas[300, 300]) == (*RED, 255)


# -- shadow ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "fill_ratio"),
    [
        ((250, 200, 650, 1000), 0.85),  # portrait
        ((50, 400, 850, 800), 1.0),  # landscape, edge to edge: the shadow must still fade before the edges
        ((250, 200, 650, 1000), 1.0),  # portrait, no room below: no shadow rather than one cut off
    ],
)
def test_shadow_is_white_at_the_edges_and_never_darker_than_allowed(product, fill_ratio):
    photo, mask = studio_photo(product=product)
    settings = PackshotSettings(preset=PackshotPreset.SHADOW, size=600, fill_ratio=fill_ratio)
    packshot = compose_packshot(photo, mask, settings)
    canvas = np.asarray(packshot.image)
    assert packshot.image.mode == "RGB"
    # the outer border of the canvas, corners included, is pure white wherever the product is not
    # (at fill ratio 1.0 the product itself reaches the border)
    transparent = PackshotSettings(preset=PackshotPreset.TRANSPARENT, size=600, fill_ratio=fill_ratio)
    no_product = np.asarray(compose_packshot(photo, mask, transparent).image)[..., 3] == 0
    border = np.ones((600, 600), dtype=bool)
    border[5:-5, 5:-5] = False
    assert (canvas[border & no_product] == 255).all()
    assert (canvas[[0, 0, -1, -1], [0, -1, 0, -1]] == 255).all()
    # and outside the product the shadow is at most ~30% dark
    assert canvas[outside(packshot.placement, 600)].min() >= 255 * 0.7


def test_shadow_sits_just_below_the_product_and_fades_away():
    # Given a portrait product on a shadow packshot
    photo, mask = studio_photo()
    packshot = compose_packshot(photo, mask, PackshotSettings(preset=PackshotPreset.SHADOW, size=600))
    canvas = np.asarray(packshot.image).astype(int)
    box = packshot.placement
    centre_x = (box.left + box.right) // 2
    # Then just below the product it is visibly darker than further down and than beside the product
    just_below = canvas[box.bottom + 2, centre_x].mean()
    far_below = canvas[-10, centre_x].mean()
    beside = canvas[(box.top + box.bottom) // 2, 10].mean()
    assert just_below < 240
    assert far_below == beside == 255
    # And nothing above the product's lower part is shaded
    upper = canvas[: box.top + (box.bottom - box.top) // 2]
    white = np.asarray(compose_packshot(photo, mask, PackshotSettings(size=600)).image).astype(int)
    np.testing.assert_array_equal(upper, white[: box.top + (box.bottom - box.top) // 2])


def test_shadow_never_covers_the_product():
    # Given the same product as white-square and as shadow packshots
    photo, mask = studio_photo()
    white = np.asarray(compose_packshot(photo, mask, PackshotSettings(size=600)).image)
    shadow = np.asarray(compose_packshot(photo, mask, PackshotSettings(preset=PackshotPreset.SHADOW, size=600)).image)
    # When we compare the pixels where the product is opaque
    transparent = compose_packshot(photo, mask, PackshotSettings(preset=PackshotPreset.TRANSPARENT, size=600)).image
    opaque = np.asarray(transparent)[..., 3] == 255
    # Then they are identical: the shadow is behind the product, only seen around it
    assert opaque.sum() > 50_000
    np.testing.assert_array_equal(shadow[opaque], white[opaque])
    assert (shadow <= white).all()


# -- inputs and settings -----------------------------------------------------------------------------------


def test_an_empty_mask_is_a_per_file_error():
    photo, _ = studio_photo()
    faint = Image.new("L", photo.size, 8)  # only noise at the floor: no product
    with pytest.raises(CatalogError) as caught:
        compose_packshot(photo, faint, SMALL)
    assert caught.value.code == "empty_mask"


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (Image.new("RGB", (100, 100)), Image.new("L", (100, 90), 255), "differs from image size"),
        (Image.new("RGB", (100, 100)), Image.new("RGB", (100, 100)), "must be mode L"),
        (Image.new("CMYK", (100, 100)), Image.new("L", (100, 100), 255), "RGB or RGBA"),
    ],
)
def test_misaligned_or_wrongly_typed_inputs_are_refused(image, mask, message):
    with pytest.raises(ValueError, match=message):
        compose_packshot(image, mask, SMALL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 63}, "size must be an integer from 64 to 10000"),
        ({"size": 10_001}, "size must be an integer from 64 to 10000"),
        ({"size": 512.0}, "size must be an integer"),
        ({"fill_ratio": 0.1}, "fill_ratio must be greater than 0.1 and at most 1.0"),
        ({"fill_ratio": 1.01}, "fill_ratio"),
        ({"fill_ratio": float("nan")}, "fill_ratio"),
        ({"quality": 0}, "quality must be an integer from 1 to 100"),
        ({"output_format": "gif"}, "unknown output format"),
        ({"preset": "black-square"}, "unknown packshot preset"),
        ({"preset": "transparent", "output_format": "jpeg"}, "transparent preset needs png or webp"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PackshotSettings(**kwargs)


def test_settings_boundaries_and_defaults():
    assert PackshotSettings(size=64, fill_ratio=1.0).product_side == 64
    assert PackshotSettings(size=10_000, fill_ratio=0.11).size == 10_000
    assert PackshotSettings().resolved_format == "jpeg"
    assert PackshotSettings(preset=PackshotPreset.SHADOW).resolved_format == "jpeg"
    assert PackshotSettings(preset=PackshotPreset.TRANSPARENT).resolved_format == "png"
    assert PackshotSettings(preset=PackshotPreset.TRANSPARENT, output_format="webp").resolved_format == "webp"
    # a preset given as its string value (CLI, JSON) is stored as the enum
    assert PackshotSettings(preset="shadow").preset is PackshotPreset.SHADOW  # type: ignore[arg-type]


# -- quality checks ----------------------------------------------------------------------------------------


def codes(flags) -> list[str]:
    return [flag.code for flag in flags]


def test_a_clean_mask_raises_no_flag():
    # Given a well-framed product, large enough for the canvas, with soft edges, faint noise and one speck
    _, mask = studio_photo()
    mask = with_blobs(mask, (5, 600, 7, 602))
    # When it is checked, then nothing is flagged
    assert quality_checks(mask, SMALL) == ()


def test_touches_edge_names_the_edges():
    # Given a product running off the bottom and left of the frame, with a speck touching the top
    mask = with_blobs(blank_mask(), (0, 300, 600, 999), (500, 0, 502, 2))
    # When checked
    flags = quality_checks(mask, SMALL)
    # Then one warning names the two edges the product touches (the speck does not count)
    [flag] = [f for f in flags if f.code == "touches_edge"]
    assert flag.severity is Severity.WARNING
    assert "bottom and left edges" in flag.message
    assert "top" not in flag.message and "right" not in flag.message


def test_mask_too_small_fires_below_1_percent():
    small = with_blobs(blank_mask(), (450, 450, 544, 544))  # 95 x 95 = 0.9%
    enough = with_blobs(blank_mask(), (450, 450, 550, 550))  # 101 x 101 = 1.02%
    [flag] = [f for f in quality_checks(small, SMALL) if f.code == "mask_too_small"]
    assert "0.90%" in flag.message
    assert "mask_too_small" not in codes(quality_checks(enough, SMALL))


def test_an_empty_mask_is_flagged_too_small_and_nothing_else():
    flags = quality_checks(blank_mask(), SMALL)
    assert codes(flags) == ["mask_too_small"]
    assert "No product was found" in flags[0].message


def test_mask_too_large_fires_above_95_percent():
    nearly_all = with_blobs(blank_mask(), (10, 10, 989, 989))  # 980 x 980 = 96%
    [flag] = [f for f in quality_checks(nearly_all, SMALL) if f.code == "mask_too_large"]
    assert "96%" in flag.message and "background" in flag.message
    assert "mask_too_large" not in codes(quality_checks(with_blobs(blank_mask(), (30, 30, 969, 969)), SMALL))


@pytest.mark.parametrize("extra_parts", [1, 2])
def test_multiple_parts_counts_significant_parts_only(extra_parts):
    # Given a main part, `extra_parts` separate parts of ~2% of the product each, and a few specks
    blobs = [(200, 200, 700, 700), (800, 100, 869, 169), (800, 800, 869, 869)][: 1 + extra_parts]
    specks = [(50, 50, 55, 55), (900, 500, 905, 505)]
    flags = quality_checks(with_blobs(blank_mask(), *blobs, *specks), SMALL)
    # Then the flag says how many parts there are, specks left out
    [flag] = [f for f in flags if f.code == "multiple_parts"]
    assert f"has {1 + extra_parts} separate parts" in flag.message


def test_a_product_made_of_many_small_pieces_is_still_found():
    # Given a mask of 400 equal dots, each far under the speck share of the whole (like a broken-up chain)
    dots = [(100 + 20 * i, 100 + 20 * j, 103 + 20 * i, 103 + 20 * j) for i in range(20) for j in range(20)]
    mask = with_blobs(blank_mask(), *dots)
    # When it is checked and composed
    flags = quality_checks(mask, SMALL)
    packshot = compose_packshot(Image.new("RGB", mask.size, RED), mask, SMALL)
    # Then the product is found (small, and in pieces, but not "empty"), and framed around every dot
    assert "No product was found" not in " ".join(flag.message for flag in flags)
    assert {"mask_too_small", "multiple_parts"} <= set(codes(flags))
    box = packshot.placement
    assert box.right - box.left == box.bottom - box.top == SMALL.product_side


def test_specks_alone_are_not_multiple_parts():
    mask = with_blobs(blank_mask(), (200, 200, 700, 700), (50, 50, 55, 55), (900, 900, 903, 903))
    assert "multiple_parts" not in codes(quality_checks(mask, SMALL))


@pytest.mark.parametrize(
    ("product_side", "severity", "factor"),
    [(465, Severity.INFO, "1.10x"), (256, Severity.WARNING, "2.00x")],
)
def test_low_resolution_says_by_how_much_the_product_is_upscaled(product_side, severity, factor):
    # Given a product whose longer side is smaller than the 512 px it must fill on the canvas
    mask = with_blobs(blank_mask(), (100, 100, 99 + product_side, 99 + product_side // 2))
    settings = PackshotSettings(size=512, fill_ratio=1.0)
    # When checked
    [flag] = [f for f in quality_checks(mask, settings) if f.code == "low_resolution"]
    # Then the severity follows the upscale factor, and the message gives it
    assert flag.severity is severity
    assert factor in flag.message and f"{product_side} px" in flag.message


def test_no_low_resolution_flag_when_the_product_is_big_enough():
    mask = with_blobs(blank_mask(), (100, 100, 100 + 511, 300))  # 512 px wide: exactly the target
    assert "low_resolution" not in codes(quality_checks(mask, PackshotSettings(size=512, fill_ratio=1.0)))


def test_quality_checks_refuse_a_mask_that_is_not_mode_l():
    with pytest.raises(ValueError, match="mode L"):
        quality_checks(Image.new("RGB", (10, 10)), SMALL)


# -- realistic size ----------------------------------------------------------------------------------------


def test_a_24_megapixel_photo_makes_a_2000px_packshot():
    # Given a 4000 x 6000 photo and its soft mask, as a full-frame camera delivers them
    photo, mask = studio_photo((4000, 6000), (700, 800, 3300, 5400), soft_edge=4)
    settings = PackshotSettings(preset=PackshotPreset.SHADOW)
    # When the packshot is composed and checked
    packshot = compose_packshot(photo, mask, settings)
    flags = quality_checks(mask, settings)
    # Then it is framed like any other, and the clean mask raises no flag
    assert isinstance(packshot, Packshot) and packshot.image.size == (2000, 2000)
    box = packshot.placement
    assert box.bottom - box.top == 1700 and abs((box.left + box.right) / 2 - 1000) <= 1
    assert flags == ()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_the_packshots_premultiplied_product_is_the_cutouts_colours_times_its_alpha(mode):
    # Given a noisy photo (its own alpha half see-through on the left, when it has one) and a soft mask whose faintest
    # values are backdrop noise
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (60, 80, 4), dtype=np.uint8)
    pixels[:, :40, 3] = 128
    photo = Image.fromarray(pixels, "RGBA").convert(mode) if mode == "RGB" else Image.fromarray(pixels, "RGBA")
    soft = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    mask = Image.fromarray(soft, "L")

    # When the packshot premultiplies the product
    premultiplied = _premultiplied_cutout(photo, mask)

    # Then it holds exactly the cutout's pixels (mask values under the noise floor cleared), premultiplied by Pillow
    cleared = Image.fromarray(np.where(soft > MASK_NOISE_FLOOR, soft, 0).astype(np.uint8), "L")
    expected = make_cutout(photo, cleared).convert("RGBa")
    assert premultiplied.mode == "RGBa"
    assert np.array_equal(np.asarray(premultiplied), np.asarray(expected))


@pytest.mark.parametrize("shade", [255, 200, 0])
def test_one_backdrop_value_composites_as_a_full_backdrop_of_it_would(shade):
    # Given premultiplied pixels, with some colours above their alpha (a resampling's overshoot)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (50, 70, 4), dtype=np.uint8)
    overshoot = pixels[..., :3] > pixels[..., 3:]

    # When they are composited over one backdrop value, and over a full-size backdrop of that value
    over_one = _over_background(pixels, np.full((1, 1, 1), shade, np.uint8))
    over_full = _over_background(pixels, np.full((50, 70, 1), shade, np.uint8))

    # Then both give the same pixels: colour + round((255 - alpha) * shade / 255), saturated at 255
    expected = pixels[..., :3] + np.round((255 - pixels[..., 3:].astype(int)) * shade / 255)
    assert overshoot.any()
    assert np.array_equal(over_one, over_full)
    assert np.array_equal(over_one, np.minimum(expected, 255).astype(np.uint8))
