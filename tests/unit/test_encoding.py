"""Encoding: no metadata whatever the input carries, reproducible bytes, transparency only where it fits."""

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin, PngImagePlugin

from functions import encoding
from functions.encoding import OUTPUT_FORMATS, content_type_for, encode_image, extension_for

XMP_PACKET = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


# -- byte-level readers: what a file really contains, not what Pillow chooses to report ---------------------


def jpeg_markers(data: bytes) -> list[int]:
    """Marker bytes of every segment before the scan data (0xE1 = EXIF/XMP, 0xE2 = ICC, 0xFE = comment)."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while True:
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            return markers
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return chunks


def webp_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    chunks, pos = [], 12
    while pos < len(data):
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        chunks.append(data[pos : pos + 4])
        pos += 8 + length + (length & 1)
    return chunks


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- inputs ------------------------------------------------------------------------------------------------


def noisy_pixels(mode: str = "RGB", size: tuple[int, int] = (96, 64), seed: int = 0) -> Image.Image:
    channels = len(mode)
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array, mode)


def gps_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "StudioCam"
    exif[ExifTags.Base.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (51.0, 30.0, 12.5),
        ExifTags.GPS.GPSLongitudeRef: "W",
        ExifTags.GPS.GPSLongitude: (0.0, 7.0, 39.0),
    }
    return exif


@pytest.fixture
def photo_with_metadata() -> Image.Image:
    """A JPEG as a camera or an editor would leave it: GPS EXIF, an ICC profile, XMP and a comment."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    noisy_pixels().save(buffer, "JPEG", exif=gps_exif(), icc_profile=icc, xmp=XMP_PACKET, comment=b"shoot 42")
    photo = decode(buffer.getvalue())
    # The fixture must really carry what the encoder is meant to drop, or the tests below prove nothing.
    assert photo.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert {"exif", "icc_profile", "xmp", "comment"} <= photo.info.keys()
    return photo


@pytest.fixture
def png_with_metadata() -> Image.Image:
    """An RGBA PNG with text chunks, EXIF and an ICC profile."""
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Jane Photographer")
    text.add_itxt("Description", "Spring collection", lang="en")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    noisy_pixels("RGBA").save(buffer, "PNG", pnginfo=text, exif=gps_exif(), icc_profile=icc)
    image = decode(buffer.getvalue())
    assert {"Author", "exif", "icc_profile"} <= image.info.keys()
    return image


# -- no metadata -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_outputs_carry_no_metadata_from_a_camera_jpeg(photo_with_metadata, fmt):
    # Given a photo with GPS EXIF, ICC, XMP and a comment
    # When it is encoded
    data = encode_image(photo_with_metadata, fmt)
    # Then none of it is in the output file, by bytes and as Pillow reads it back
    for signature in (b"Exif", b"GPS", b"ICC_PROFILE", b"http://ns.adobe.com/xap", b"xmpmeta", b"shoot 42"):
        assert signature not in data
    decoded = decode(data)
    assert len(decoded.getexif()) == 0
    assert not {"exif", "icc_profile", "xmp", "comment"} & decoded.info.keys()


def test_jpeg_has_only_the_jfif_header_and_coding_segments(photo_with_metadata):
    markers = jpeg_markers(encode_image(photo_with_metadata, "jpeg"))
    app_segments = [m for m in markers if 0xE0 <= m <= 0xEF]
    assert app_segments == [0xE0]  # JFIF only: no APP1 (EXIF/XMP), APP2 (ICC), APP13 (IPTC), ...
    assert 0xFE not in markers  # no comment


@pytest.mark.parametrize("source", ["photo_with_metadata", "png_with_metadata"])
def test_png_has_only_header_data_and_end_chunks(source, request):
    # Given images carrying EXIF, ICC and text chunks
    image = request.getfixturevalue(source)
    # When encoded as PNG
    chunks = png_chunks(encode_image(image, "png"))
    # Then the file holds pixels only: no tIME, tEXt, iTXt, eXIf, iCCP, pHYs
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    assert set(chunks[1:-1]) == {b"IDAT"}


@pytest.mark.parametrize("quality", [80, 100])
def test_webp_has_only_image_chunks(png_with_metadata, quality):
    chunks = webp_chunks(encode_image(png_with_metadata, "webp", quality=quality))
    assert set(chunks) <= {b"VP8 ", b"VP8L", b"VP8X", b"ALPH"}


# -- reproducible bytes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_same_pixels_give_the_same_bytes_whatever_the_metadata(photo_with_metadata, fmt):
    # Given the same pixels twice: once with camera metadata, once bare
    bare = Image.fromarray(np.asarray(photo_with_metadata), "RGB")
    # When each is encoded (the first one twice)
    first, again = encode_image(photo_with_metadata, fmt), encode_image(photo_with_metadata, fmt)
    # Then all three files are byte-identical
    assert first == again == encode_image(bare, fmt)


def test_encoding_leaves_the_callers_image_untouched(photo_with_metadata):
    before = dict(photo_with_metadata.info)
    encode_image(photo_with_metadata, "png")
    assert photo_with_metadata.info == before


# -- transparency ------------------------------------------------------------------------------------------


def test_jpeg_refuses_transparency_and_names_the_formats_that_keep_it():
    # Given an RGBA image with half-transparent pixels
    image = noisy_pixels("RGBA")
    # When it is encoded as JPEG, then the error says what to use instead
    with pytest.raises(ValueError, match="png or webp"):
        encode_image(image, "jpeg")


def test_jpeg_accepts_an_rgba_image_that_is_fully_opaque():
    image = noisy_pixels("RGBA")
    image.putalpha(255)
    decoded = decode(encode_image(image, "jpeg"))
    assert decoded.mode == "RGB" and decoded.size == image.size


@pytest.mark.parametrize(("fmt", "quality"), [("png", 92), ("webp", 100), ("webp", 80)])
def test_png_and_webp_keep_alpha_exactly(fmt, quality):
    image = noisy_pixels("RGBA")
    decoded = decode(encode_image(image, fmt, quality=quality))
    assert decoded.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(decoded)[..., 3], np.asarray(image)[..., 3])


# -- lossless / lossy and chroma ---------------------------------------------------------------------------


def test_png_and_webp_at_quality_100_are_lossless():
    image = noisy_pixels("RGBA")
    for fmt in ("png", "webp"):
        np.testing.assert_array_equal(np.asarray(decode(encode_image(image, fmt, quality=100))), image)


def test_webp_below_100_is_lossy_and_honours_quality():
    image = noisy_pixels("RGB", size=(256, 256))
    low, high = encode_image(image, "webp", quality=20), encode_image(image, "webp", quality=90)
    assert b"VP8 " in webp_chunks(low) and b"VP8L" not in webp_chunks(low)
    assert len(low) < len(high)


@pytest.mark.parametrize(("quality", "subsampling"), [(90, 0), (100, 0), (89, 2), (60, 2)])
def test_jpeg_keeps_full_chroma_at_high_quality(quality, subsampling):
    # 0 = 4:4:4 (thin coloured product edges stay sharp), 2 = 4:2:0
    decoded = decode(encode_image(noisy_pixels(), "jpeg", quality=quality))
    assert JpegImagePlugin.get_sampling(decoded) == subsampling


def test_jpeg_colours_stay_in_srgb():
    # No colour conversion on the way out: a flat brand colour comes back as itself, within JPEG's error
    image = Image.new("RGB", (64, 64), (200, 30, 60))
    decoded = np.asarray(decode(encode_image(image, "jpeg", quality=95)), dtype=np.int16)
    assert np.abs(decoded - (200, 30, 60)).max() <= 2


# -- arguments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [0, 101, -5, 50.5, True, "90"])
def test_quality_outside_1_to_100_is_refused(quality):
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 100"):
        encode_image(noisy_pixels(), "png", quality=quality)


@pytest.mark.parametrize("quality", [1, 100])
def test_quality_bounds_are_inclusive(quality):
    assert decode(encode_image(noisy_pixels(), "jpeg", quality=quality)).size == (96, 64)


@pytest.mark.parametrize("fmt", ["gif", "jpg", "JPEG", "", "tiff"])
def test_unknown_format_is_refused_with_the_choices(fmt):
    with pytest.raises(ValueError, match="use one of: jpeg, png, webp"):
        encode_image(noisy_pixels(), fmt)


def test_unsupported_mode_is_refused():
    with pytest.raises(ValueError, match="convert it to one of L, RGB, RGBA"):
        encode_image(noisy_pixels().convert("CMYK"), "jpeg")


def test_a_grey_mask_encodes_as_png():
    mask = noisy_pixels().convert("L")
    decoded = decode(encode_image(mask, "png"))
    assert decoded.mode == "L"
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(mask))


def test_extensions_and_content_types_match_the_format_that_is_written():
    for fmt in OUTPUT_FORMATS:
        decoded_format = decode(encode_image(noisy_pixels(), fmt)).format
        assert decoded_format is not None
        assert extension_for(fmt) == {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[decoded_format]
        assert content_type_for(fmt) == Image.MIME[decoded_format]


# -- PNG written in strips ---------------------------------------------------------------------------------


def _idat_stream(data: bytes) -> bytes:
    """The zlib stream a PNG's IDAT chunks carry, joined (each chunk's CRC checked on the way)."""
    stream, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC on {kind!r}"
        if kind == b"IDAT":
            stream += body
        pos += 12 + length
    return stream


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_a_png_made_of_many_strips_is_one_valid_stream_with_the_same_pixels(mode, monkeypatch):
    # Given an image many strips tall (strips cut every ~300 bytes here; every 4 MB in use)
    monkeypatch.setattr(encoding, "PNG_STRIP_BYTES", 300)
    image = noisy_pixels("RGBA", size=(61, 47), seed=5).convert(mode)
    # When it is encoded as PNG
    data = encode_image(image, "png")
    # Then it holds several IDAT chunks whose joined zlib stream passes zlib's own checksum (Adler-32) check
    assert png_chunks(data).count(b"IDAT") > 5
    raw = zlib.decompress(_idat_stream(data))
    assert len(raw) == image.height * (1 + image.width * len(mode))
    # And it decodes to exactly the pixels it was given
    assert np.array_equal(np.asarray(decode(data)), np.asarray(image))


def test_strips_deflated_on_a_pool_give_the_same_bytes_as_in_turn(monkeypatch):
    # Given an image cut into strips, and a pool of threads
    monkeypatch.setattr(encoding, "PNG_STRIP_BYTES", 900)
    image = noisy_pixels("RGBA", size=(50, 80), seed=9)
    pixels = np.asarray(image)

    def rows(top: int, bottom: int) -> np.ndarray:
        return pixels[top:bottom]

    # When it is encoded in turn and on the pool
    alone = encoding.encode_png_rows(image.size, "RGBA", rows).result()
    with ThreadPoolExecutor(max_workers=3) as pool:
        on_pool = encoding.encode_png_rows(image.size, "RGBA", rows, pool).result(timeout=30)
    # Then the files are byte for byte the same, and the same as encode_image's
    assert on_pool == alone == encode_image(image, "png")


def test_a_failing_strip_fails_the_png_rather_than_hanging(monkeypatch):
    # Given rows that cannot be read past the middle of the image
    monkeypatch.setattr(encoding, "PNG_STRIP_BYTES", 300)

    def rows(top: int, bottom: int) -> np.ndarray:
        if bottom > 20:
            raise OSError("truncated")
        return np.zeros((bottom - top, 10), np.uint8)

    # When the PNG is made on a pool
    with ThreadPoolExecutor(max_workers=2) as pool:
        png = encoding.encode_png_rows((10, 40), "L", rows, pool)
        # Then whoever waits for it gets the strip's error
        with pytest.raises(OSError, match="truncated"):
            png.result(timeout=30)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (700, 1), (1200, 1000)])
def test_image_array_reads_every_pixel_as_numpy_does(mode, size):
    # Given a noisy image, tall enough at 1200 x 1000 to be read in several 2 MB strips (RGB: 3.6 MB)
    rng = np.random.default_rng(3)
    bands = len(mode)
    pixels = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode)

    # When it is read strip by strip
    read = encoding.image_array(image)

    # Then it is the same array np.asarray gives, shape and dtype included
    expected = np.asarray(image)
    assert read.shape == expected.shape and read.dtype == expected.dtype
    assert np.array_equal(read, expected)
