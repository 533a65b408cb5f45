"""A corpus of bad and odd image files, made in-process with Pillow and numpy (small, deterministic).

Each function returns the file's bytes. The ICC profiles and the raw PNGs are written by hand so that the
tests need no file from outside the repository and can state what the pixels should become.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib

import numpy as np
from PIL import Image

# --- plain helpers ---------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def solid(colour: tuple[int, ...], size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def noisy_rgb(size: tuple[int, int] = (96, 64), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), mode="RGB")


def valid_jpeg(size: tuple[int, int] = (96, 64)) -> bytes:
    return encode(noisy_rgb(size), "JPEG", quality=90)


# --- raw PNG writer (for what Pillow will not write: 16-bit RGB, headers declaring huge sizes) -----------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of one colour: a few tens of KB on disk, width*height pixels once decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return raw_png(width, height, 1, 0, idat)


def bomb_header_only_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header declares a huge size but whose data is empty: decoding it would fail at once."""
    return raw_png(width, height, 8, 2, zlib.compress(b""))


def sixteen_bit_rgb_png(values: np.ndarray) -> bytes:
    """values: uint16 array (H, W, 3) -> a 16-bit-per-channel RGB PNG."""
    height, width, _ = values.shape
    rows = values.astype(">u2").reshape(height, width * 3).tobytes()
    stride = width * 3 * 2
    scanlines = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(height))
    return raw_png(width, height, 16, 2, zlib.compress(scanlines))


def sixteen_bit_grey_png(values: np.ndarray) -> bytes:
    """values: uint16 array (H, W) -> a 16-bit greyscale PNG (Pillow reads it as mode I;16)."""
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG")


# --- hand-written ICC profiles ---------------------------------------------------------------------------

D50 = (0.9642, 1.0, 0.8249)
# Adobe RGB (1998) primaries adapted to D50 (Bradford), as in Adobe's own profile; the TRC is 563/256.
ADOBE_RGB_D50_COLORANTS = ((0.6097, 0.3111, 0.0195), (0.2052, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))
ADOBE_RGB_GAMMA = 563 / 256


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_type(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + b"".join(_s15f16(v) for v in xyz)


def _desc_type(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\x00"
    return (
        b"desc\x00\x00\x00\x00"
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + struct.pack(">II", 0, 0)  # no Unicode description
        + struct.pack(">HB", 0, 0)  # no ScriptCode description
        + b"\x00" * 67
    )


def _text_type(text: str) -> bytes:
    return b"text\x00\x00\x00\x00" + text.encode("ascii") + b"\x00"


def _icc_profile(device_class: bytes, colour_space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2.1 profile: 128-byte header, tag table, tag data aligned on 4 bytes."""
    data_start = 128 + 4 + 12 * len(tags)
    table = struct.pack(">I", len(tags))
    blob = b""
    for signature, payload in tags:
        table += struct.pack(">4sII", signature, data_start + len(blob), len(payload))
        blob += payload + b"\x00" * (-len(payload) % 4)
    size = data_start + len(blob)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"\x00" * 4, 0x02100000, device_class, colour_space, pcs)
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\x00" * 4  # platform
        + b"\x00" * 4  # flags
        + b"\x00" * 8  # manufacturer, model
        + b"\x00" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual
        + b"".join(_s15f16(v) for v in D50)
        + b"\x00" * 4  # creator
        + b"\x00" * 16  # profile id
        + b"\x00" * 28
    )
    assert len(header) == 128
    return header + table + blob


def adobe_rgb_profile() -> bytes:
    """A matrix/TRC display profile with Adobe RGB (1998) primaries and gamma."""
    gamma_curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, round(ADOBE_RGB_GAMMA * 256))
    red, green, blue = ADOBE_RGB_D50_COLORANTS
    return _icc_profile(
        b"mntr",
        b"RGB ",
        b"XYZ ",
        [
            (b"desc", _desc_type("Test Adobe RGB (1998) compatible")),
            (b"cprt", _text_type("Public domain test profile")),
            (b"wtpt", _xyz_type(D50)),
            (b"rXYZ", _xyz_type(red)),
            (b"gXYZ", _xyz_type(green)),
            (b"bXYZ", _xyz_type(blue)),
            (b"rTRC", gamma_curve),
            (b"gTRC", gamma_curve),
            (b"bTRC", gamma_curve),
        ],
    )


# D50-adapted sRGB: linear sRGB -> XYZ(D50). Used only to build the CMYK profile's table.
_SRGB_TO_XYZ_D50 = np.array(
    [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
)

# How much yellower than neutral the CMYK profile renders paper white, in CIELAB b*.
CMYK_PROFILE_WARMTH_B = 12.0


def _lab_d50(linear_rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    xyz = _SRGB_TO_XYZ_D50 @ np.array(linear_rgb) / np.array(D50)

    def f(t: float) -> float:
        return float(np.cbrt(t)) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(float(v)) for v in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def warm_cmyk_profile() -> bytes:
    """A CMYK input profile (lut8, 2-point grid) that renders CMYK like the naive formula, but warmer.

    Paper white (0,0,0,0) becomes CIELAB (100, 0, +12): a visibly cream white. A converter that ignores the
    profile produces pure white instead, which is what the test tells apart.
    """
    clut = bytearray()
    for c, m, y, k in itertools.product((0, 1), repeat=4):  # first channel varies slowest
        lightness, a, b = _lab_d50(((1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)))
        b += CMYK_PROFILE_WARMTH_B * lightness / 100
        clut += bytes(
            [
                round(np.clip(lightness * 255 / 100, 0, 255)),
                round(np.clip(a + 128, 0, 255)),
                round(np.clip(b + 128, 0, 255)),
            ]
        )
    identity_table = bytes(range(256))
    lut = (
        b"mft1\x00\x00\x00\x00"
        + struct.pack(">BBBB", 4, 3, 2, 0)
        + b"".join(_s15f16(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
        + identity_table * 4
        + bytes(clut)
        + identity_table * 3
    )
    return _icc_profile(
        b"scnr",
        b"CMYK",
        b"Lab ",
        [
            (b"desc", _desc_type("Test warm CMYK")),
            (b"cprt", _text_type("Public domain test profile")),
            (b"wtpt", _xyz_type(D50)),
            (b"A2B0", lut),
        ],
    )


# --- the odd files ---------------------------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = valid_jpeg()
    return data[: len(data) * 6 // 10]


def corrupt_after_magic(fmt: str) -> bytes:
    """A valid magic number, noise, and the format's end marker: damaged rather than cut short."""
    magic, end = {
        "JPEG": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", b"\xff\xd9"),
        "PNG": (b"\x89PNG\r\n\x1a\n", _png_chunk(b"IEND", b"")),
        "GIF": (b"GIF89a", b";"),
        "TIFF": (b"II*\x00", b""),
    }[fmt]
    noise = np.random.default_rng(7).integers(0, 256, 2000, dtype=np.uint8)
    noise[0] = 0  # so that the noise can never read as a JPEG marker or a PNG chunk header
    return magic + noise.tobytes() + end


def random_bytes(n: int = 4096) -> bytes:
    return np.random.default_rng(3).integers(0, 256, n, dtype=np.uint8).tobytes()


def svg() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>\n'
    )


def eps() -> bytes:
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
        b"newpath 0 0 moveto 10 0 lineto 10 10 lineto closepath fill\nshowpage\n%%EOF\n"
    )


def pdf() -> bytes:
    return encode(solid((200, 30, 30)), "PDF")


def cmyk_jpeg_with_profile(cmyk: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    return encode(solid(cmyk, mode="CMYK"), "JPEG", quality=95, icc_profile=warm_cmyk_profile())


def cmyk_jpeg_without_profile(cmyk: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    return encode(solid(cmyk, mode="CMYK"), "JPEG", quality=95)


def adobe_rgb_png(colour: tuple[int, int, int]) -> bytes:
    return encode(solid(colour), "PNG", icc_profile=adobe_rgb_profile())


def palette_png_with_transparency() -> bytes:
    """Left half transparent (palette index 0), right half opaque red (index 1)."""
    image = Image.new("P", (32, 16), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (16, 0, 32, 16))
    return encode(image, "PNG", transparency=0)


def la_png() -> bytes:
    """Grey 100, alpha 0 on the left half and 255 on the right."""
    alpha = Image.new("L", (32, 16), 0)
    alpha.paste(255, (16, 0, 32, 16))
    return encode(Image.merge("LA", (Image.new("L", (32, 16), 100), alpha)), "PNG")


def opaque_rgba_png() -> bytes:
    return encode(solid((10, 20, 30, 255), mode="RGBA"), "PNG")


def one_bit_png() -> bytes:
    """Black left half, white right half."""
    image = Image.new("1", (32, 16), 0)
    image.paste(1, (16, 0, 32, 16))
    return encode(image, "PNG")


MARK_SIZE = 16


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """Stored 64x48 grey with a red 16x16 mark in the stored top-left corner, EXIF orientation set."""
    image = solid((128, 128, 128))
    image.paste((255, 0, 0), (0, 0, MARK_SIZE, MARK_SIZE))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def jpeg_with_gps_exif_xmp() -> bytes:
    image = solid((90, 120, 150))
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0131] = "secret-editor 1.0"  # Software
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 12.0)
    gps[3] = "E"
    gps[4] = (4.0, 53.0, 28.0)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    return encode(image, "JPEG", quality=90, exif=exif.tobytes(), xmp=xmp, comment=b"shot at home")


ANIMATION_COLOURS = ((220, 20, 20), (20, 220, 20), (20, 20, 220))


def animated(fmt: str) -> bytes:
    """Three solid frames (red, green, blue) as an animated GIF, APNG or WebP."""
    frames = [solid(colour, (32, 32)) for colour in ANIMATION_COLOURS]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        params["lossless"] = True
    return encode(frames[0], fmt, **params)


def heic(colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """Needs pillow-heif's opener registered."""
    return encode(solid(colour, (64, 64)), "HEIF", quality=95)


def avif(colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    return encode(solid(colour, (64, 64)), "AVIF", quality=95)
