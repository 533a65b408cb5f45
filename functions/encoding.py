"""Encode catalog images for the web: sRGB pixels only, no metadata, the same bytes for the same pixels."""

import io
from typing import Any, Literal, get_args

import cv2
import numpy as np
from PIL import Image

OutputFormat = Literal["jpeg", "png", "webp"]

OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)

_EXTENSIONS: dict[OutputFormat, str] = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
_CONTENT_TYPES: dict[OutputFormat, str] = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_ENCODABLE_MODES = ("L", "RGB", "RGBA")

# At high quality the chroma of thin product edges (piping, prints) is worth keeping: 4:4:4 below, 4:2:0 above.
_FULL_CHROMA_FROM_QUALITY = 90
_SUBSAMPLING_444 = 0
_SUBSAMPLING_420 = 2
# PNG by OpenCV's libpng at zlib level 1 with the "Up" row filter only. A full-size cutout PNG is the largest single
# cost of a photo: Pillow at level 6 took 3x level 1, and Pillow tries every filter on every row, which on a 24 MP
# cutout costs as much as the deflate. One fixed filter, measured on cutouts and masks (bench/bench_background.py):
# Up gave the smallest files of the single filters, ~1.5x faster than Pillow at level 1. Fixed settings keep the
# bytes reproducible across callers. OpenCV writes only IHDR, IDAT and IEND: no metadata.
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
_TO_OPENCV_ORDER = {"RGB": cv2.COLOR_RGB2BGR, "RGBA": cv2.COLOR_RGBA2BGRA}


def check_output_format(fmt: str) -> OutputFormat:
    """`fmt` as an OutputFormat, or a ValueError that lists the formats there are."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; use one of: {', '.join(OUTPUT_FORMATS)}")
    return fmt


def check_quality(quality: int) -> int:
    """`quality` if it is an integer 1..100, else a ValueError."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
    return quality


def extension_for(fmt: OutputFormat) -> str:
    """File extension, with its dot, for an output format: `.jpg`, `.png`, `.webp`."""
    return _EXTENSIONS[check_output_format(fmt)]


def content_type_for(fmt: OutputFormat) -> str:
    """HTTP/S3 content type for an output format, e.g. `image/jpeg`."""
    return _CONTENT_TYPES[check_output_format(fmt)]


def encode_image(image: Image.Image, fmt: OutputFormat, *, quality: int = 92) -> bytes:
    """Encode an 8-bit sRGB image (L, RGB or RGBA) with no metadata at all.

    No EXIF, GPS, XMP, ICC profile, comments, text chunks or timestamps are written, whatever the
    input carries: untagged pixels are read as sRGB by browsers. The same pixels give the same bytes.
    JPEG refuses transparency; PNG and WebP keep it. WebP is lossless at `quality=100`.
    """
    # 1. check inputs
    fmt = check_output_format(fmt)
    quality = check_quality(quality)
    if image.mode not in _ENCODABLE_MODES:
        raise ValueError(
            f"cannot encode a {image.mode} image; convert it to one of {', '.join(_ENCODABLE_MODES)} first"
        )

    # 2. a fresh image with the same pixels and an empty `info`: some encoders fall back to `image.info`
    # (e.g. the JPEG comment), so passing empty options alone would not be enough. It shares the pixel buffer
    # (nothing here writes to it): copying a 24 MP cutout first would cost a tenth of its encoding time.
    image.load()
    clean = image._new(image.im)
    clean.info = {}

    # 3. format-specific options
    options: dict[str, Any]
    if fmt == "jpeg":
        if clean.mode == "RGBA":
            if clean.getchannel("A").getextrema() != (255, 255):
                raise ValueError("JPEG cannot keep transparency; encode this image as png or webp instead")
            clean = clean.convert("RGB")
        subsampling = _SUBSAMPLING_444 if quality >= _FULL_CHROMA_FROM_QUALITY else _SUBSAMPLING_420
        # Baseline (not progressive) with optimised Huffman tables: progressive scans cost 2.5x the encoding time
        # of a 2000 px packshot for files ~4% smaller.
        options = {"quality": quality, "subsampling": subsampling, "optimize": True}
    elif fmt == "png":
        return _encode_png(clean)
    else:
        # `exact` keeps the colour under fully transparent pixels as given (our packshots zero it),
        # rather than letting libwebp rewrite it.
        options = {"lossless": quality == 100, "quality": quality, "exact": True}

    # 4. encode
    buffer = io.BytesIO()
    clean.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def _encode_png(image: Image.Image) -> bytes:
    pixels = np.asarray(image)
    if image.mode in _TO_OPENCV_ORDER:
        pixels = cv2.cvtColor(pixels, _TO_OPENCV_ORDER[image.mode])
    ok, encoded = cv2.imencode(".png", pixels, _PNG_PARAMS)
    if not ok:  # libpng refuses nothing we hand it (8-bit L, BGR, BGRA); this would be a broken OpenCV build
        raise RuntimeError(f"OpenCV could not encode a {image.mode} {image.size} image as PNG")
    return encoded.tobytes()
