"""The cutout every engine shares: the photo's own pixels, the mask as alpha, nothing hidden in the clear parts."""

import numpy as np
import pytest
from PIL import Image

from functions.stages.background import cutout_rows, make_cutout


def _noisy_photo(mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(3)
    channels = 4 if mode == "RGBA" else 3
    return Image.fromarray(rng.integers(0, 256, (40, 60, channels), dtype=np.uint8), mode)


def test_cutout_keeps_product_pixels_and_zeroes_transparent_ones():
    # Given a noisy photo and a mask with a hard product, a soft edge and background
    photo = _noisy_photo()
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10:30, 20:40] = 255
    mask[10:30, 40] = 128
    # When it is cut out
    cutout = np.asarray(make_cutout(photo, Image.fromarray(mask)))
    # Then product and edge pixels keep the photo's colour, with the mask as alpha
    assert np.array_equal(cutout[10:30, 20:41, :3], np.asarray(photo)[10:30, 20:41])
    assert np.array_equal(cutout[..., 3], mask)
    # And the background carries no leftover colour (it would bloat the PNG for nothing)
    assert not cutout[mask == 0].any()


def test_existing_transparency_is_kept():
    photo = _noisy_photo("RGBA")
    mask = Image.new("L", photo.size, 255)
    cutout = np.asarray(make_cutout(photo, mask))
    own_alpha = np.asarray(photo)[..., 3]
    assert np.array_equal(cutout[..., 3], own_alpha)


def test_mask_of_another_size_is_refused():
    with pytest.raises(ValueError, match="differs"):
        make_cutout(_noisy_photo(), Image.new("L", (10, 10)))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_cutout_rows_read_in_strips_make_the_whole_cutout(mode):
    # Given a photo and a soft mask
    photo = _noisy_photo(mode)
    mask = Image.fromarray(np.random.default_rng(4).integers(0, 3, (40, 60), dtype=np.uint8) * 127)
    # When its cutout is read strip by strip, as the PNG encoder reads it
    rows = cutout_rows(photo, mask)
    strips = np.concatenate([rows(top, min(40, top + 7)) for top in range(0, 40, 7)])
    # Then the strips are the whole cutout, hidden pixels zeroed
    assert np.array_equal(strips, np.asarray(make_cutout(photo, mask)))
    assert not strips[np.asarray(mask) == 0].any()
