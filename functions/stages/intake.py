"""Validate and normalise one uploaded product photo.

Bytes in; an 8-bit sRGB(A) Pillow image with no metadata out, or an `IntakeError` whose message names the
file and says what to do. The format comes from the bytes (magic numbers), never from the file name or a
content type, and Pillow is only ever asked to decode formats on the allowlist.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError, features
from pydantic import ValidationError

from functions.errors import IntakeError, field_problems
from schemas import IntakeInfo, ProductSidecar
from schemas.product import SIDECAR_NAME

__all__ = ["SIDECAR_NAME", "IntakeLimits", "NormalisedImage", "normalise_image", "parse_sidecar", "sniff_format"]


@dataclass(frozen=True)
class IntakeLimits:
    """Ceilings checked before any pixel is decoded."""

    max_file_bytes: int = 256 * 1024 * 1024
    # Also the decompression-bomb threshold: a header that declares more pixels is refused unread.
    max_pixels: int = 50_000_000


@dataclass(frozen=True)
class NormalisedImage:
    """The photo as every later step expects it, and what intake found and changed."""

    image: Image.Image
    info: IntakeInfo


# Detected format -> the Pillow plugin id that may decode it. Nothing else is ever handed to Pillow.
_RASTER_PLUGINS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "TIFF": "TIFF", "GIF": "GIF"}
_VECTOR_OR_DOCUMENT = {"SVG", "EPS", "PDF"}
_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "PNG": {".png"},
    "WEBP": {".webp"},
    "TIFF": {".tif", ".tiff"},
    "GIF": {".gif"},
    "HEIC": {".heic", ".heif", ".hif"},
    "AVIF": {".avif"},
}
_EXPORT_HINT = "export it as a JPEG, PNG or TIFF and upload it again"
# What to call a refused format in a sentence.
_DESCRIPTIONS = {
    "SVG": "an SVG drawing",
    "EPS": "an EPS (PostScript) file",
    "PDF": "a PDF document",
    "PSD": "a Photoshop (PSD) file",
    "BMP": "a BMP bitmap",
    "JXL": "a JPEG XL image",
}

# ISO-BMFF brands (the `ftyp` box) that mark a still HEIF/HEIC or AVIF image.
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}

_ORIENTATION_WORDS = {
    2: "mirrored",
    3: "rotated",
    4: "mirrored",
    5: "rotated and mirrored",
    6: "rotated",
    7: "rotated and mirrored",
    8: "rotated",
}


def sniff_format(data: bytes) -> str | None:
    """Name the file format from its leading bytes only; None when it is not one we know."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(data)
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "EPS"
    # Readers accept a PDF header anywhere in the first KiB, so a prefix check alone would let some through.
    if b"%PDF-" in data[:1024]:
        return "PDF"
    if _looks_like_svg(data):
        return "SVG"
    # Named only so that the refusal can say what the file is.
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith(b"BM") and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "BMP"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JXL"
    return None


def _sniff_isobmff(data: bytes) -> str | None:
    box_size = struct.unpack(">I", data[:4])[0]
    brands = {data[8:12]}
    end = min(max(box_size, 16), len(data), 256)
    brands.update(data[i : i + 4] for i in range(16, end - 3, 4))
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIC_BRANDS:
        return "HEIC"
    return None


def _looks_like_svg(data: bytes) -> bool:
    text = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg"):
        return True
    return text.startswith((b"<?xml", b"<!--", b"<!doctype")) and b"<svg" in text


def _heif_plugin_available() -> bool:
    """Register pillow-heif's opener if it is installed; True when Pillow can then decode HEIC."""
    try:
        import pillow_heif  # optional extra: imported only when a HEIC arrives
    except ImportError:
        return False
    if "HEIF" not in Image.OPEN:
        pillow_heif.register_heif_opener()
    return "HEIF" in Image.OPEN


def _avif_plugin_available() -> bool:
    # Pillow >= 11.3 wheels decode AVIF natively; older builds may have it through a plugin.
    return bool(features.check("avif")) and "AVIF" in Image.OPEN


def _plugin_for(fmt: str, name: str) -> str:
    """The Pillow plugin id to decode `fmt` with, or an `unsupported_format` refusal."""
    if fmt in _RASTER_PLUGINS:
        return _RASTER_PLUGINS[fmt]
    if fmt == "HEIC":
        if _heif_plugin_available():
            return "HEIF"
        raise IntakeError(
            "unsupported_format",
            f"{name} is a HEIC photo and HEIC support is not installed: run "
            "pip install 'catalog-image-processor[heif]' (pillow-heif), or export it as a JPEG.",
        )
    if fmt == "AVIF":
        if _avif_plugin_available():
            return "AVIF"
        raise IntakeError(
            "unsupported_format",
            f"{name} is an AVIF image and this Pillow build cannot read AVIF: install Pillow 11.3 or newer "
            "(its wheels include AVIF), or export it as a JPEG.",
        )
    if fmt in _VECTOR_OR_DOCUMENT:
        raise IntakeError(
            "unsupported_format",
            f"{name} is {_DESCRIPTIONS[fmt]}, a vector/document format rather than a photo: {_EXPORT_HINT}.",
        )
    if fmt:
        raise IntakeError(
            "unsupported_format", f"{name} is {_DESCRIPTIONS[fmt]}, which is not accepted: {_EXPORT_HINT}."
        )
    raise IntakeError(
        "unsupported_format",
        f"{name} is not an image format we can read (JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF): {_EXPORT_HINT}.",
    )


def _jpeg_cut_short(data: bytes) -> bool:
    """Walk the marker segments: True if the file ends inside them or before the end-of-image marker."""
    pos = 2
    while True:
        if pos + 4 > len(data):
            return True
        if data[pos] != 0xFF:
            return False  # a segment must start with a marker: damaged, not short
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0x00, 0xD9):
            return False
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return False
        if pos + 2 + length > len(data):
            return True
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the end-of-image marker
            return data.find(b"\xff\xd9", pos + 2 + length) == -1
        pos += 2 + length


def _png_cut_short(data: bytes) -> bool:
    """Walk the chunks: True if the file ends inside one or before IEND."""
    pos = 8
    while True:
        if pos + 8 > len(data):
            return True
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if not kind.isalpha() or length > 2**31 - 1:
            return False  # not a chunk header: damaged, not short
        if pos + 12 + length > len(data):
            return True
        if kind == b"IEND":
            return False
        pos += 12 + length


def _is_cut_short(fmt: str, data: bytes, exc: BaseException) -> bool:
    """Tell a cut upload (truncated_image) from damaged data (corrupt_image)."""
    # Where the container can be walked, it decides; Pillow says "truncated" for some damaged files too.
    if fmt == "JPEG":
        return _jpeg_cut_short(data)
    if fmt == "PNG":
        return _png_cut_short(data)
    if fmt == "WEBP" and (len(data) < 12 or len(data) < struct.unpack("<I", data[4:8])[0] + 8):
        return True  # shorter than its RIFF header says
    return "truncated" in str(exc).lower()


def _decode_failure(fmt: str, data: bytes, name: str, exc: BaseException) -> IntakeError:
    if _is_cut_short(fmt, data, exc):
        return IntakeError("truncated_image", f"{name} is cut short (truncated {fmt}): re-export or re-upload it.")
    return IntakeError(
        "corrupt_image",
        f"{name} starts like a {fmt} file but its data is damaged and cannot be decoded: re-export or re-upload it.",
    )


def _too_many_pixels(name: str, size: tuple[int, int], limits: IntakeLimits) -> IntakeError:
    width, height = size
    return IntakeError(
        "too_many_pixels",
        f"{name} is {width}x{height} pixels ({width * height / 1e6:.1f} MP), over the "
        f"{limits.max_pixels / 1e6:g} MP limit: resize it and upload it again.",
    )


def normalise_image(data: bytes, filename: str, limits: IntakeLimits = IntakeLimits()) -> NormalisedImage:
    """Check one uploaded file and return it as an 8-bit sRGB(A) image with no metadata.

    Raises `IntakeError` with one of the codes empty_file, file_too_large, unsupported_format,
    too_many_pixels, truncated_image, corrupt_image.
    """
    name = PurePath(filename).name or filename
    notes: list[str] = []

    # 1. check the size before anything is parsed
    if not data:
        raise IntakeError("empty_file", f"{name} is empty (0 bytes): upload the file again.")
    if len(data) > limits.max_file_bytes:
        raise IntakeError(
            "file_too_large",
            f"{name} is {len(data) / 2**20:.1f} MiB, over the {limits.max_file_bytes / 2**20:g} MiB limit: "
            "export it smaller (a JPEG at quality 90 is plenty) and upload it again.",
        )

    # 2. sniff the real format and refuse anything off the allowlist
    fmt = sniff_format(data)
    plugin = _plugin_for(fmt or "", name)
    assert fmt is not None  # _plugin_for refuses unknown formats
    extension = PurePath(name).suffix.lower()
    if extension and extension not in _EXTENSIONS[fmt]:
        notes.append(f"file name says {extension} but the content is {fmt}; read as {fmt}")

    # 3. read the header, check the pixel count, then decode; all under our own bomb threshold
    source = _open_and_load(data, fmt, plugin, name, limits, notes)

    # 4. orientation, colour, metadata
    try:
        image = _apply_orientation(source, notes)
        image = _to_srgb_8bit(image, source.info.get("icc_profile"), notes)
        # A plain Image, never the file object, whose cached EXIF would still carry GPS and the like. It shares
        # the decoded pixels (decoded once; a 24 MP copy would cost as much as a stage).
        if image is source:
            image = source._new(source.im)
    finally:
        source.close()
    image.info = {}  # no EXIF, XMP, GPS or ICC travels on

    info = IntakeInfo(detected_format=fmt, width=image.width, height=image.height, mode=image.mode, notes=tuple(notes))
    return NormalisedImage(image=image, info=info)


def _open_and_load(
    data: bytes, fmt: str, plugin: str, name: str, limits: IntakeLimits, notes: list[str]
) -> Image.Image:
    # Pillow's own bomb check only warns below 2x its global limit; making the warning an error refuses
    # those too, without changing the global MAX_IMAGE_PIXELS other threads rely on.
    # catch_warnings swaps process-wide state in Python 3.11: run intake in worker processes, not threads.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[plugin])  # lazy: reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise IntakeError(
                "too_many_pixels",
                f"{name} declares a picture too large to open safely (a possible decompression bomb): "
                f"resize it to at most {limits.max_pixels / 1e6:g} MP and upload it again.",
            ) from exc
        except UnidentifiedImageError as exc:
            raise _decode_failure(fmt, data, name, exc) from exc
        except Exception as exc:  # Pillow's header parsers raise SyntaxError, ValueError, struct.error, ...
            raise _decode_failure(fmt, data, name, exc) from exc

        if image.width <= 0 or image.height <= 0:
            image.close()
            raise IntakeError("corrupt_image", f"{name} declares an empty picture (0 pixels): re-export it.")
        if image.width * image.height > limits.max_pixels:
            image.close()
            raise _too_many_pixels(name, image.size, limits)

        try:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                image.seek(0)
                if image.format == "MPO":
                    notes.append(f"multi-picture JPEG: used the main picture of {frames}")
                elif fmt == "TIFF":
                    notes.append(f"multi-page TIFF: used the first of {frames} pages")
                else:
                    notes.append(f"animated image: used the first of {frames} frames")
            if _has_16_bit_samples(image):
                notes.append(f"16-bit {image.mode} samples scaled to 8-bit")
            # Truncated files must fail here rather than decode as grey; never flip this global on.
            assert not ImageFile.LOAD_TRUNCATED_IMAGES, "ImageFile.LOAD_TRUNCATED_IMAGES must stay False"
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            image.close()
            raise _too_many_pixels(name, image.size, limits) from exc
        except MemoryError:
            image.close()
            raise
        except Exception as exc:  # decoders raise OSError, EOFError, ValueError, ... on bad data
            image.close()
            raise _decode_failure(fmt, data, name, exc) from exc
    # Pillow warns about damage it worked around (e.g. "Corrupt EXIF data"); the reviewer should see it.
    notes.extend(dict.fromkeys(f"decoder warning: {warning.message}" for warning in caught))
    return image


def _has_16_bit_samples(image: Image.Image) -> bool:
    # Before load, a tile's raw mode tells the stored sample depth, e.g. PNG "RGB;16B" or TIFF "I;16".
    for tile in getattr(image, "tile", ()):
        args: tuple[object, ...] | str | None = tile.args
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return image.mode.startswith("I;16")


def _apply_orientation(image: Image.Image, notes: list[str]) -> Image.Image:
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # malformed EXIF/XMP: the pixels are still good, so keep them as stored
        notes.append("EXIF data is unreadable: orientation left as stored")
        return image
    if orientation not in _ORIENTATION_WORDS:
        return image
    transposed = ImageOps.exif_transpose(image)
    notes.append(f"{_ORIENTATION_WORDS[orientation]} to match EXIF orientation {orientation}")
    return transposed


def _to_srgb_8bit(image: Image.Image, icc: bytes | None, notes: list[str]) -> Image.Image:
    """Bring any Pillow mode to 8-bit RGB or RGBA in sRGB, noting each change."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N") or mode == "F":
        image = _scale_to_8bit_grey(image, notes)
        mode = image.mode
    if mode == "1":
        image = image.convert("L")
        notes.append("1-bit black and white converted to 8-bit")
    elif mode == "P" or mode == "PA":
        has_alpha = (
            mode == "PA" or "transparency" in image.info or (image.palette is not None and image.palette.mode == "RGBA")
        )
        image = image.convert("RGBA" if has_alpha else "RGB")
        notes.append(f"palette image converted to {image.mode}")
    elif mode in ("LA", "La", "RGBa"):
        image = image.convert("RGBA")
        notes.append(f"{mode} converted to RGBA")
    elif mode in ("RGBX", "YCbCr", "HSV"):
        image = image.convert("RGB")
        notes.append(f"{mode} converted to RGB")
    elif mode == "LAB":
        image = _apply_transform(image, _lab_to_srgb())
        notes.append("CIELAB converted to sRGB")
        icc = None
    mode = image.mode

    if icc and mode in ("RGB", "RGBA", "CMYK", "L"):
        converted = _apply_embedded_profile(image, icc, notes)
        if converted is not None:
            image = converted
        elif mode == "CMYK":
            notes.append("the embedded CMYK profile could not be used: naive CMYK to RGB conversion")
            image = image.convert("RGB")
    elif mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK without a colour profile: naive CMYK to RGB conversion, colours may be off")

    if image.mode == "L":
        image = image.convert("RGB")
        notes.append("greyscale converted to RGB")
    if image.mode == "RGBA" and image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB")
        notes.append("fully opaque alpha channel dropped")
    if image.mode not in ("RGB", "RGBA"):  # a mode Pillow can hold but we have no rule for
        notes.append(f"{image.mode} converted to RGB")
        image = image.convert("RGB")
    return image


def _scale_to_8bit_grey(image: Image.Image, notes: list[str]) -> Image.Image:
    """16-bit (and 32-bit int/float) greyscale to 8-bit, scaled by the full range rather than clipped."""
    if image.mode == "F":
        # Float TIFFs store 0..1.
        values = np.asarray(image, dtype=np.float32)
        grey = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append("32-bit float greyscale scaled from 0..1 to 8-bit")
        return Image.fromarray(grey, mode="L")
    values = np.asarray(image)
    if values.dtype != np.uint16:  # 32-bit "I" images may hold anything; 16-bit ones need no clip (or copy)
        values = np.clip(values, 0, 65535)
    wide = values.astype(np.uint32)
    # round(v * 255 / 65535) == round(v / 257), in integers
    grey = ((wide + 128) // 257).astype(np.uint8)
    return Image.fromarray(grey, mode="L")


def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")


_ICC_SPACE_FOR_MODE = {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK", "L": "GRAY"}


def _apply_embedded_profile(image: Image.Image, icc: bytes, notes: list[str]) -> Image.Image | None:
    """Convert through the file's own ICC profile; None when the profile is unusable for this image."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (profile.profile.profile_description or "").strip()
        space = (profile.profile.xcolor_space or "").strip()
    except (OSError, ImageCms.PyCMSError, ValueError):
        notes.append("embedded colour profile is unreadable: assumed sRGB")
        return None
    if space != _ICC_SPACE_FOR_MODE[image.mode]:
        notes.append(f"embedded {space or 'unknown'} colour profile does not fit a {image.mode} image: ignored")
        return None
    if image.mode in ("RGB", "RGBA") and "srgb" in description.lower():
        return image  # already sRGB; a transform would only cost time
    out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    # CMYK profiles carry perceptual tables for photos; RGB matrix profiles map colorimetrically.
    intent = ImageCms.Intent.PERCEPTUAL if image.mode == "CMYK" else ImageCms.Intent.RELATIVE_COLORIMETRIC
    try:
        transform = ImageCms.buildTransform(
            profile,
            ImageCms.createProfile("sRGB"),
            image.mode,
            out_mode,
            renderingIntent=intent,
            flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
        )
        converted = _apply_transform(image, transform)
    except (OSError, ImageCms.PyCMSError, ValueError):
        notes.append(f"embedded colour profile {description!r} could not be applied: assumed sRGB")
        return None
    notes.append(f"{image.mode} converted from embedded colour profile {description or 'unnamed'!r} to sRGB")
    return converted


def _apply_transform(image: Image.Image, transform: ImageCms.ImageCmsTransform) -> Image.Image:
    converted = ImageCms.applyTransform(image, transform)
    assert converted is not None  # None only with inPlace=True
    return converted


# -- the product's sidecar ---------------------------------------------------------------------------------------


def parse_sidecar(data: bytes, where: str) -> ProductSidecar:
    """A SKU's `product.json`; a bad one raises IntakeError `invalid_sidecar` naming `where` and every bad field."""
    try:
        return ProductSidecar.model_validate_json(data)
    except ValidationError as error:
        problems = field_problems(error)
        raise IntakeError("invalid_sidecar", f"{where} is not valid: {problems}.") from error
