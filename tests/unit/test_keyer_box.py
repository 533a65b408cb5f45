"""The keyer keys only the box around the edges and what is not plain backdrop: the same masks as the whole frame."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import functions.stages.background.keyer as keyer_module
from functions.local.synthetic_photos import render_product_photo
from functions.stages.background.keyer import BackdropKeyer

BACKDROP = (246, 246, 244)


def _product(size=(300, 400), garment="tshirt", colour=(196, 28, 36), seed=5) -> Image.Image:
    return render_product_photo(garment, colour, BACKDROP, size=size, seed=seed).image


def _small_in_a_corner() -> Image.Image:
    # A rendered photo pasted as a tile on a flat canvas: the tile's edge is a faint step in plain backdrop that
    # fences its inside off from the frame
    canvas = Image.new("RGB", (300, 400), BACKDROP)
    canvas.paste(_product().resize((90, 120)), (190, 260))
    return canvas


def _seam_across_the_backdrop() -> Image.Image:
    photo = _product()
    ImageDraw.Draw(photo).line((0, 380, 300, 384), fill=(238, 238, 236), width=2)
    return photo


def _touching_the_left_edge() -> Image.Image:
    return _product(garment="trousers", colour=(34, 42, 72)).crop((60, 0, 300, 400))


def _two_products() -> Image.Image:
    canvas = Image.new("RGB", (520, 400), BACKDROP)
    product = _product(colour=(40, 40, 40))
    canvas.paste(product.crop((50, 20, 250, 380)), (0, 20))
    canvas.paste(product.crop((50, 20, 250, 380)).transpose(Image.Transpose.FLIP_LEFT_RIGHT), (300, 20))
    return canvas


def _white_on_white_with_a_speck() -> Image.Image:
    photo = render_product_photo("tshirt", (240, 240, 237), (247, 247, 247), size=(300, 400), seed=9).image
    ImageDraw.Draw(photo).ellipse((10, 10, 16, 16), fill=(90, 90, 90))
    return photo


@pytest.mark.parametrize(
    "make_photo",
    [
        _product,
        _small_in_a_corner,
        _seam_across_the_backdrop,
        _touching_the_left_edge,
        _two_products,
        _white_on_white_with_a_speck,
    ],
    ids=lambda make: make.__name__.strip("_"),
)
def test_keying_a_box_gives_the_whole_frames_mask(make_photo, monkeypatch):
    # Given a studio photo whose product leaves plain backdrop around it (or not)
    photo = make_photo()

    # When it is keyed as the keyer does, and again with the box forced to the whole frame
    boxed = BackdropKeyer().remove(photo)
    monkeypatch.setattr(keyer_module, "_KEYING_BOX_MAX_SHARE", 0.0)
    whole = BackdropKeyer().remove(photo)

    # Then the masks, the confidence and the notes are the same
    assert np.array_equal(np.asarray(boxed.mask), np.asarray(whole.mask))
    assert (boxed.confidence, boxed.notes, boxed.backdrop_rgb) == (whole.confidence, whole.notes, whole.backdrop_rgb)


def test_a_product_with_backdrop_around_it_is_keyed_in_a_box(monkeypatch):
    # Given a small product in a corner of a large plain backdrop
    photo = _small_in_a_corner()
    boxes: list[tuple[slice, slice]] = []
    keying_box = keyer_module._keying_box

    def recorded(keyed: np.ndarray, margin: int) -> tuple[slice, slice]:
        boxes.append(keying_box(keyed, margin))
        return boxes[-1]

    monkeypatch.setattr(keyer_module, "_keying_box", recorded)

    # When it is keyed
    BackdropKeyer().remove(photo)

    # Then the box keyed is a small part of the frame, next to the product
    rows, columns = boxes[0]
    assert (rows.stop - rows.start) * (columns.stop - columns.start) < 0.3 * 300 * 400
    assert rows.start > 200 and columns.start > 150
