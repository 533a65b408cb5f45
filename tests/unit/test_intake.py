"""Intake: what a merchandiser's odd, broken or hostile files turn into (an image or a clear refusal)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from functions.errors import IntakeError
from functions.stages import intake
from functions.stages.intake import IntakeLimits, normalise_image, sniff_format
from tests.unit import intake_corpus as corpus

STABLE_CODES = {
    "empty_file",
    "file_too_large",
    "unsupported_format",
    "too_many_pixels",
    "truncated_image",
    "corrupt_image",
}
SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"


def refuse(data: bytes, filename: str, limits: IntakeLimits | None = None) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        normalise_image(data, filename, limits or IntakeLimits())
    return caught.value


def pixel(result: intake.NormalisedImage, xy: tuple[int, int]) -> tuple[int, ...]:
    value = result.image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> None:
    assert np.max(np.abs(np.array(actual, int) - np.array(expected, int))) <= tolerance, (actual, expected)


# --- refusals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "make", "code", "words"),
    [
        ("empty.jpg", lambda: b"", "empty_file", "empty"),
        ("cut.jpg", corpus.truncated_jpeg, "truncated_image", "cut short (truncated JPEG)"),
        ("noise.jpg", lambda: corpus.corrupt_after_magic("JPEG"), "corrupt_image", "damaged"),
        ("noise.png", lambda: corpus.corrupt_after_magic("PNG"), "corrupt_image", "damaged"),
        ("noise.gif", lambda: corpus.corrupt_after_magic("GIF"), "corrupt_image", "damaged"),
        ("noise.tif", lambda: corpus.corrupt_after_magic("TIFF"), "corrupt_image", "damaged"),
        ("logo.svg", corpus.svg, "unsupported_format", "vector/document"),
        ("logo.eps", corpus.eps, "unsupported_format", "vector/document"),
        ("lookbook.pdf", corpus.pdf, "unsupported_format", "vector/document"),
        ("mystery.jpg", corpus.random_bytes, "unsupported_format", "not an image format"),
        ("huge.png", corpus.bomb_png, "too_many_pixels", "too large to open safely"),
    ],
)
def test_bad_files_are_refused_with_a_stable_code_and_a_sentence_naming_the_file(filename, make, code, words):
    # Given a bad file under a merchandiser's file name
    data = make()

    # When intake reads it
    error = refuse(data, f"uploads/SKU-1/{filename}")

    # Then the code is stable and the sentence names the file (not the folder) and the reason
    assert error.code == code
    assert error.code in STABLE_CODES
    assert error.message.startswith(filename + " ")
    assert words in error.message
    assert error.message.rstrip().endswith(".")


@pytest.mark.parametrize("data", [corpus.svg(), corpus.eps(), corpus.pdf()], ids=["svg", "eps", "pdf"])
def test_vector_and_document_files_say_to_export_a_raster(data):
    # Given a vector/document file named like a photo
    # When intake reads it
    error = refuse(data, "front.jpg")

    # Then it is refused with a way forward
    assert error.code == "unsupported_format"
    assert "export it as a JPEG, PNG or TIFF" in error.message


def test_a_truncated_png_is_reported_as_cut_short():
    # Given a PNG cut off in the middle of its image data
    data = corpus.encode(corpus.noisy_rgb(), "PNG")
    cut = data[: len(data) // 2]

    # When intake reads it
    error = refuse(cut, "back.png")

    # Then the merchandiser is told it is cut short, not that it is some other kind of broken
    assert error.code == "truncated_image"
    assert "truncated PNG" in error.message


def test_a_file_over_the_byte_limit_is_refused_before_it_is_decoded():
    # Given a tiny byte limit and a file that is over it and also damaged
    limits = IntakeLimits(max_file_bytes=100)
    damaged = corpus.corrupt_after_magic("PNG")

    # When intake reads it
    error = refuse(damaged, "big.png", limits)

    # Then the size is the reason given: nothing was parsed
    assert error.code == "file_too_large"
    assert "limit" in error.message


def test_a_bomb_header_is_refused_without_decoding_the_pixels():
    # Given a PNG whose header declares 20000x20000 pixels but whose image data is empty
    data = corpus.bomb_header_only_png()

    # When intake reads it
    error = refuse(data, "bomb.png")

    # Then the pixel count is the reason: had it decoded, the empty data would have been the complaint
    assert error.code == "too_many_pixels"


def test_the_pixel_ceiling_is_our_own_limit_not_only_pillows():
    # Given a small image and a ceiling below its pixel count
    data = corpus.valid_jpeg((96, 64))

    # When intake reads it
    error = refuse(data, "small.jpg", IntakeLimits(max_pixels=96 * 64 - 1))

    # Then it is refused with its size in the sentence
    assert error.code == "too_many_pixels"
    assert "96x64" in error.message


def test_pillows_bomb_warning_is_an_error_and_the_global_limit_is_left_alone():
    # Given a 10000x10000 PNG: over Pillow's warning threshold, under its hard error, and a generous ceiling
    before = Image.MAX_IMAGE_PIXELS
    assert before is not None
    assert before < 10_000 * 10_000 < 2 * before
    data = corpus.bomb_png(10_000, 10_000)

    # When intake reads it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak out as a warning either
        error = refuse(data, "bomb.png", IntakeLimits(max_pixels=10**12))

    # Then Pillow's warning became a refusal and the process-wide setting is unchanged
    assert error.code == "too_many_pixels"
    assert before == Image.MAX_IMAGE_PIXELS


def test_heic_without_the_plugin_says_which_extra_to_install(monkeypatch):
    # Given a HEIC file (only its `ftyp` box matters) and no HEIF plugin
    heic_header = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    monkeypatch.setattr(intake, "_heif_plugin_available", lambda: False)

    # When intake reads it
    error = refuse(heic_header, "IMG_0001.HEIC")

    # Then the refusal names the install command
    assert error.code == "unsupported_format"
    assert "pip install 'catalog-image-processor[heif]'" in error.message


def test_pillow_is_only_asked_for_the_sniffed_format(monkeypatch):
    # Given a spy on Image.open
    calls: list[object] = []
    real_open = Image.open

    def spying_open(fp, mode="r", formats=None):
        calls.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spying_open)

    # When intake reads a JPEG named .png and an SVG
    normalise_image(corpus.valid_jpeg(), "shirt.png")
    refuse(corpus.svg(), "logo.svg")

    # Then Pillow was asked once, for JPEG only, and never for the SVG
    assert calls == [["JPEG"]]


# --- accepted files and what they become -------------------------------------------------------------------


def test_a_mislabelled_extension_is_read_by_content_and_noted():
    # Given a JPEG saved with a .png name
    data = corpus.valid_jpeg()

    # When intake reads it
    result = normalise_image(data, "shirt-front.png")

    # Then it is accepted as what it really is, and the note says the name was misleading
    assert result.info.detected_format == "JPEG"
    assert result.image.mode == "RGB"
    assert any(".png" in note and "JPEG" in note for note in result.info.notes)


def test_a_plain_jpeg_needs_no_notes():
    # Given an ordinary sRGB JPEG
    # When intake reads it
    result = normalise_image(corpus.valid_jpeg((96, 64)), "plain.jpg")

    # Then nothing was changed or remarked on
    assert result.info.notes == ()
    assert (result.info.width, result.info.height, result.info.mode) == (96, 64, "RGB")


@pytest.mark.parametrize(
    ("orientation", "size", "mark_corner"),
    [
        (3, (64, 48), "bottom-right"),  # rotate 180
        (6, (48, 64), "top-right"),  # rotate 90 clockwise to view
        (8, (48, 64), "bottom-left"),  # rotate 90 counter-clockwise to view
    ],
)
def test_exif_orientation_is_applied(orientation, size, mark_corner):
    # Given a 64x48 JPEG with a red mark in its stored top-left corner and an EXIF orientation
    data = corpus.exif_rotated_jpeg(orientation)

    # When intake reads it
    result = normalise_image(data, "rotated.jpg")

    # Then the size and the mark are where a viewer would see them, and the note says so
    assert result.image.size == size
    assert (result.info.width, result.info.height) == size
    width, height = size
    inset = corpus.MARK_SIZE // 2
    corners = {
        "top-left": (inset, inset),
        "top-right": (width - inset, inset),
        "bottom-left": (inset, height - inset),
        "bottom-right": (width - inset, height - inset),
    }
    for corner, xy in corners.items():
        expected = (255, 0, 0) if corner == mark_corner else (128, 128, 128)
        assert_close(pixel(result, xy), expected, tolerance=6)
    assert f"rotated to match EXIF orientation {orientation}" in result.info.notes


def test_exif_gps_xmp_icc_and_comments_are_stripped():
    # Given a JPEG carrying a camera make, GPS coordinates, XMP and a comment
    data = corpus.jpeg_with_gps_exif_xmp()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the GPS really is in the input

    # When intake reads it
    result = normalise_image(data, "home.jpg")

    # Then none of it survives on the image, nor in a file saved from it
    assert result.image.info == {}
    assert len(result.image.getexif()) == 0
    saved = Image.open(io.BytesIO(corpus.encode(result.image, "JPEG")))
    assert len(saved.getexif()) == 0
    assert "xmp" not in saved.info
    assert "comment" not in saved.info


def test_an_embedded_icc_profile_is_stripped_after_conversion():
    # Given an Adobe RGB PNG
    result = normalise_image(corpus.adobe_rgb_png((180, 60, 60)), "adobe.png")

    # Then the output carries no profile: its pixels are sRGB now
    assert "icc_profile" not in result.image.info


def _adobe_rgb_to_srgb(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Published Adobe RGB (1998) and sRGB matrices (both D65), independent of LittleCMS."""
    adobe_to_xyz = np.array(
        [[0.5767309, 0.1855540, 0.1881852], [0.2973769, 0.6273491, 0.0752741], [0.0270343, 0.0706872, 0.9911085]]
    )
    xyz_to_srgb = np.array(
        [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560], [0.0556434, -0.2040259, 1.0572252]]
    )
    linear = np.clip(xyz_to_srgb @ adobe_to_xyz @ ((np.array(rgb) / 255.0) ** corpus.ADOBE_RGB_GAMMA), 0, 1)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    red, green, blue = (int(v) for v in np.round(encoded * 255))
    return red, green, blue


@pytest.mark.parametrize("colour", [(180, 60, 60), (60, 160, 90), (230, 200, 120), (40, 40, 200)])
def test_rgb_with_a_non_srgb_profile_is_converted_to_srgb(colour):
    # Given a PNG in Adobe RGB (1998) with its profile embedded
    data = corpus.adobe_rgb_png(colour)

    # When intake reads it
    result = normalise_image(data, "adobe.png")

    # Then the pixels are what the published matrices give in sRGB, not the stored numbers
    expected = _adobe_rgb_to_srgb(colour)
    assert_close(pixel(result, (0, 0)), expected, tolerance=2)
    assert expected != colour
    assert any("Adobe RGB" in note and "sRGB" in note for note in result.info.notes)


def test_cmyk_jpeg_is_converted_through_its_embedded_profile():
    # Given a mid-grey CMYK JPEG whose embedded profile renders it warm (yellowish)
    data = corpus.cmyk_jpeg_with_profile((0, 0, 0, 128))

    # When intake reads it
    result = normalise_image(data, "cmyk.jpg")

    # Then it is RGB and warm, which only the profile could make it, and the note names the profile
    red, _green, blue = pixel(result, (10, 10))
    assert result.image.mode == "RGB"
    assert red - blue >= 8
    assert any("CMYK" in note and "Test warm CMYK" in note for note in result.info.notes)


def test_cmyk_jpeg_without_a_profile_gets_a_naive_conversion_and_a_warning_note():
    # Given the same mid-grey CMYK JPEG without a profile
    data = corpus.cmyk_jpeg_without_profile((0, 0, 0, 128))

    # When intake reads it
    result = normalise_image(data, "cmyk.jpg")

    # Then it is a neutral grey and the note says the colours may be off
    red, _green, blue = pixel(result, (10, 10))
    assert abs(red - blue) <= 2
    assert 110 <= red <= 145
    assert any("naive" in note for note in result.info.notes)


def test_16_bit_greyscale_is_scaled_not_clipped():
    # Given a 16-bit greyscale PNG with black, middle, white and a dark value
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    data = corpus.sixteen_bit_grey_png(values)

    # When intake reads it
    result = normalise_image(data, "sixteen.png")

    # Then the full 16-bit range maps onto the 8-bit range
    out = np.asarray(result.image)
    assert result.image.mode == "RGB"
    assert out[0, :, 0].tolist() == [round(int(v) * 255 / 65535) for v in values[0]]
    assert out[0, 1].tolist() == [128, 128, 128]
    assert out[0, 2].tolist() == [255, 255, 255]
    assert any("16-bit" in note for note in result.info.notes)


def test_16_bit_rgb_is_scaled_to_8_bit():
    # Given a 16-bit-per-channel RGB PNG
    values = np.zeros((2, 3, 3), dtype=np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32896, 1000

    # When intake reads it
    result = normalise_image(corpus.sixteen_bit_rgb_png(values), "sixteen.png")

    # Then each channel keeps its place in the range
    assert_close(pixel(result, (0, 0)), (255, 128, 4), tolerance=1)
    assert any("16-bit" in note for note in result.info.notes)


def test_palette_with_transparency_becomes_rgba():
    # Given a palette PNG, transparent on the left and red on the right
    result = normalise_image(corpus.palette_png_with_transparency(), "palette.png")

    # Then the transparency is kept as an alpha channel
    assert result.image.mode == "RGBA"
    assert pixel(result, (2, 2))[3] == 0
    assert pixel(result, (30, 2)) == (255, 0, 0, 255)


def test_grey_with_alpha_becomes_rgba():
    result = normalise_image(corpus.la_png(), "la.png")

    assert result.image.mode == "RGBA"
    assert pixel(result, (2, 2)) == (100, 100, 100, 0)
    assert pixel(result, (30, 2)) == (100, 100, 100, 255)


def test_a_fully_opaque_alpha_channel_is_dropped():
    result = normalise_image(corpus.opaque_rgba_png(), "opaque.png")

    assert result.image.mode == "RGB"
    assert pixel(result, (0, 0)) == (10, 20, 30)
    assert "fully opaque alpha channel dropped" in result.info.notes


def test_one_bit_becomes_rgb_black_and_white():
    result = normalise_image(corpus.one_bit_png(), "lineart.png")

    assert result.image.mode == "RGB"
    assert pixel(result, (2, 2)) == (0, 0, 0)
    assert pixel(result, (30, 2)) == (255, 255, 255)


@pytest.mark.parametrize(("fmt", "filename"), [("GIF", "spin.gif"), ("PNG", "spin.png"), ("WEBP", "spin.webp")])
def test_animated_images_use_the_first_frame(fmt, filename):
    # Given a three-frame animation: red, green, blue
    data = corpus.animated(fmt)

    # When intake reads it
    result = normalise_image(data, filename)

    # Then the first (red) frame is used and the note says how many frames there were
    assert result.image.mode == "RGB"
    assert_close(pixel(result, (16, 16)), corpus.ANIMATION_COLOURS[0], tolerance=3)
    assert "animated image: used the first of 3 frames" in result.info.notes


def test_heic_round_trip_when_the_plugin_is_installed():
    pillow_heif = pytest.importorskip("pillow_heif")
    # Given a HEIC photo (made with the plugin's encoder)
    pillow_heif.register_heif_opener()
    data = corpus.heic((200, 40, 40))
    assert sniff_format(data) == "HEIC"

    # When intake reads it
    result = normalise_image(data, "IMG_0001.HEIC")

    # Then it is an ordinary RGB image of the right colour
    assert result.info.detected_format == "HEIC"
    assert result.image.mode == "RGB"
    assert result.image.size == (64, 64)
    assert_close(pixel(result, (32, 32)), (200, 40, 40), tolerance=8)


def test_avif_is_accepted_when_pillow_can_read_it():
    if not intake._avif_plugin_available():
        pytest.skip("this Pillow build has no AVIF support")
    data = corpus.avif((40, 120, 200))
    assert sniff_format(data) == "AVIF"

    result = normalise_image(data, "photo.avif")

    assert result.info.detected_format == "AVIF"
    assert_close(pixel(result, (32, 32)), (40, 120, 200), tolerance=8)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0rest", "JPEG"),
        (b"\x89PNG\r\n\x1a\nrest", "PNG"),
        (b"GIF89a rest", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"MM\x00*rest", "TIFF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
        (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"%!PS-Adobe-3.0 EPSF-3.0", "EPS"),
        (b"%PDF-1.7", "PDF"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomavc1", None),  # an MP4 video
        (b"hello", None),
    ],
)
def test_sniff_format_reads_magic_numbers(data, expected):
    assert sniff_format(data) == expected


# --- properties ----------------------------------------------------------------------------------------------

_JPEG = corpus.valid_jpeg((48, 32))
_PNG = corpus.encode(corpus.noisy_rgb((24, 16)), "PNG")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(_JPEG)))
def test_any_prefix_of_a_jpeg_is_accepted_or_refused_with_a_stable_code(cut):
    # Given the first `cut` bytes of a valid JPEG
    data = _JPEG[:cut]

    # When intake reads it
    try:
        result = normalise_image(data, "prefix.jpg")
    except IntakeError as error:
        # Then any refusal is one of the stable codes
        assert error.code in STABLE_CODES
        assert error.message.startswith("prefix.jpg ")
    else:
        # Or it is the whole picture
        assert result.image.size == (48, 32)
        assert result.image.mode == "RGB"


@settings(max_examples=150, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(_PNG) - 1), value=st.integers(0, 255))
def test_a_png_with_one_damaged_byte_never_raises_anything_but_intake_errors(position, value):
    # Given a PNG with one byte overwritten
    data = bytearray(_PNG)
    data[position] = value

    # When intake reads it, Then it is accepted or refused with a stable code
    try:
        normalise_image(bytes(data), "damaged.png")
    except IntakeError as error:
        assert error.code in STABLE_CODES


# --- the real product photos (skipped where they are absent) ---------------------------------------------------


@pytest.mark.samples
@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no ../shared/samples folder")
def test_every_sample_jpeg_normalises_to_rgb():
    # Given the real catalog photos
    photos = sorted(SAMPLES.glob("*.jpg"))
    assert photos

    for photo in photos:
        # When intake reads each one
        result = normalise_image(photo.read_bytes(), photo.name)

        # Then it is an RGB JPEG with no metadata left
        assert result.info.detected_format == "JPEG"
        assert result.image.mode == "RGB"
        assert result.image.size == (result.info.width, result.info.height)
        assert result.image.info == {}
