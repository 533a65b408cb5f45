"""Studio product photos rendered from scratch, with the exact product mask they were drawn from.

They stand in for a merchandiser's photos in the README demo (`catalog examples DIR`), give the tests a ground
truth to measure cutouts against, and give the benchmark a 24 MP photo without shipping one. Everything is
deterministic for a given seed: the same call gives the same pixels, and `write_example_photos` the same bytes.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from schemas.product import SIDECAR_NAME

GARMENTS = ("tshirt", "trousers", "dress", "hoodie")

_Point = tuple[float, float]


@dataclass(frozen=True)
class SyntheticPhoto:
    """A rendered photo and its ground truth."""

    image: Image.Image  # RGB, 8-bit
    product_mask: Image.Image  # "L", 255 exactly where the garment is (binary), the image's size
    backdrop_rgb: tuple[int, int, int]


@dataclass(frozen=True)
class _GarmentDrawing:
    """A silhouette in a unit box (x right, y down) plus the details that make it read as that garment.

    `right_half` runs from the top centre clockwise to the bottom centre and is mirrored for the left half.
    `dark_regions` (polygon, darkness) are insides seen through openings; `lines` are seams and stitching.
    """

    aspect: float  # width / height of the garment's box
    right_half: tuple[_Point, ...]
    dark_regions: tuple[tuple[tuple[_Point, ...], float], ...] = ()
    lines: tuple[tuple[_Point, ...], ...] = ()
    fold_angle_deg: float = 0.0  # main direction of the folds, from vertical


def _mirror(points: tuple[_Point, ...]) -> tuple[_Point, ...]:
    """A right-half outline (top centre -> bottom centre) closed with its mirror image."""
    left = tuple((1.0 - x, y) for x, y in reversed(points) if x > 0.5)
    return points + left


_DRAWINGS: dict[str, _GarmentDrawing] = {
    "tshirt": _GarmentDrawing(
        aspect=1.0,
        right_half=(
            (0.5, 0.035),
            (0.58, 0.03),
            (0.62, 0.02),
            (0.80, 0.075),
            (0.99, 0.30),
            (0.90, 0.385),
            (0.775, 0.31),
            (0.765, 0.60),
            (0.78, 0.985),
            (0.64, 0.995),
            (0.5, 1.0),
        ),
        dark_regions=(
            # The inside of the back, seen above the front neckline.
            (_mirror(((0.5, 0.04), (0.60, 0.035), (0.605, 0.07), (0.57, 0.10), (0.5, 0.115))), 0.22),
        ),
        lines=(
            ((0.38, 0.03), (0.39, 0.075), (0.43, 0.11), (0.5, 0.13), (0.57, 0.11), (0.61, 0.075), (0.62, 0.03)),
            ((0.23, 0.955), (0.77, 0.955)),
            ((0.965, 0.315), (0.885, 0.37)),
            ((0.035, 0.315), (0.115, 0.37)),
        ),
        fold_angle_deg=25.0,
    ),
    "trousers": _GarmentDrawing(
        aspect=0.5,
        right_half=(
            (0.5, 0.0),
            (0.93, 0.0),
            (0.965, 0.25),
            (0.985, 0.62),
            (0.99, 1.0),
            (0.56, 1.0),
            (0.53, 0.60),
            (0.515, 0.38),
            (0.5, 0.36),
        ),
        lines=(
            ((0.07, 0.065), (0.93, 0.065)),
            ((0.5, 0.065), (0.5, 0.29), (0.56, 0.33)),
            ((0.75, 0.065), (0.93, 0.21)),
            ((0.25, 0.065), (0.07, 0.21)),
            ((0.76, 0.10), (0.78, 0.99)),
            ((0.24, 0.10), (0.22, 0.99)),
        ),
        fold_angle_deg=0.0,
    ),
    "dress": _GarmentDrawing(
        aspect=0.6,
        right_half=(
            (0.5, 0.16),
            (0.58, 0.12),
            (0.63, 0.0),
            (0.72, 0.0),
            (0.75, 0.13),
            (0.80, 0.20),
            (0.76, 0.42),
            (0.86, 0.70),
            (0.97, 0.97),
            (0.74, 0.995),
            (0.5, 1.0),
        ),
        lines=(
            ((0.24, 0.42), (0.76, 0.42)),
            ((0.04, 0.945), (0.5, 0.975), (0.96, 0.945)),
            ((0.62, 0.43), (0.66, 0.62)),
            ((0.38, 0.43), (0.34, 0.62)),
        ),
        fold_angle_deg=8.0,
    ),
    "hoodie": _GarmentDrawing(
        aspect=1.05,
        right_half=(
            (0.5, 0.0),
            (0.56, 0.004),
            (0.61, 0.022),
            (0.645, 0.055),
            (0.662, 0.10),
            (0.67, 0.135),
            (0.80, 0.16),
            (0.97, 0.72),
            (0.985, 0.80),
            (0.90, 0.83),
            (0.885, 0.76),
            (0.77, 0.36),
            (0.765, 0.90),
            (0.77, 0.995),
            (0.5, 1.0),
        ),
        dark_regions=(
            # The inside of the hood.
            (_mirror(((0.5, 0.045), (0.575, 0.06), (0.605, 0.11), (0.585, 0.17), (0.5, 0.21))), 0.4),
        ),
        lines=(
            ((0.47, 0.20), (0.465, 0.40)),
            ((0.53, 0.20), (0.535, 0.40)),
            ((0.33, 0.88), (0.36, 0.62), (0.64, 0.62), (0.67, 0.88)),
            ((0.235, 0.93), (0.765, 0.93)),
            ((0.905, 0.775), (0.975, 0.745)),
            ((0.095, 0.775), (0.025, 0.745)),
        ),
        fold_angle_deg=15.0,
    ),
}


def render_product_photo(
    garment: str,
    garment_rgb: tuple[int, int, int],
    backdrop_rgb: tuple[int, int, int],
    size: tuple[int, int] = (1200, 1600),
    seed: int = 0,
    shadow: bool = True,
    noise_sigma: float = 2.0,
) -> SyntheticPhoto:
    """A garment of `garment_rgb` shot on a seamless `backdrop_rgb` sweep; `size` is (width, height)."""
    if garment not in _DRAWINGS:
        raise ValueError(f"unknown garment {garment!r}; choose one of {', '.join(GARMENTS)}")
    width, height = size
    if min(width, height) < 64:
        raise ValueError(f"size {size} is too small for a product photo (at least 64 px a side)")
    rng = np.random.default_rng(seed)
    drawing = _DRAWINGS[garment]

    # The garment fills most of the frame, inside a margin, as a catalog photographer would frame it.
    margin = 0.08
    box_height = min(height * (1 - 2 * margin), width * (1 - 2 * margin) / drawing.aspect)
    box_height *= rng.uniform(0.86, 0.95)
    box_width = box_height * drawing.aspect
    cutout = _render_garment(drawing, garment_rgb, (box_width, box_height), rng)
    slack_x = (width - cutout.width) / 2
    slack_y = (height - cutout.height) / 2
    offset = (
        round(slack_x + rng.uniform(-0.3, 0.3) * max(slack_x - margin * width, 0)),
        round(slack_y + rng.uniform(-0.3, 0.3) * max(slack_y - margin * height, 0)),
    )
    return _compose(cutout, backdrop_rgb, size, offset, rng, shadow, noise_sigma)


def compose_on_backdrop(
    cutout: Image.Image,
    backdrop_rgb: tuple[int, int, int],
    size: tuple[int, int],
    offset: tuple[int, int],
    seed: int,
    shadow: bool = True,
    noise_sigma: float = 2.0,
) -> SyntheticPhoto:
    """Place an RGBA `cutout` with its top-left corner at `offset` on a studio sweep; truth = alpha > 127."""
    if cutout.mode != "RGBA":
        raise ValueError(f"cutout must be RGBA, got mode {cutout.mode}")
    x, y = offset
    if x < 0 or y < 0 or x + cutout.width > size[0] or y + cutout.height > size[1]:
        raise ValueError(f"a {cutout.size} cutout at {offset} does not fit inside a {size} frame")
    return _compose(cutout, backdrop_rgb, size, offset, np.random.default_rng(seed), shadow, noise_sigma)


def write_example_photos(directory: Path, size: tuple[int, int] = (1800, 2400)) -> list[Path]:
    """Write a merchandiser-style intake folder (SKU folders with product.json, one loose photo); return the photos.

    One of them is the hard case on purpose: a white T-shirt on a white backdrop. The default size leaves the
    products large enough for a 2000 px packshot without upscaling.
    """
    examples: list[tuple[str, str, tuple[int, int, int], tuple[int, int, int], dict[str, str]]] = [
        (
            "TSHIRT-RED-001",
            "tshirt",
            (196, 28, 36),
            (246, 246, 244),
            {"title": "Crew-neck T-shirt", "category": "tops", "colour": "red"},
        ),
        (
            "TROUSERS-NAVY-002",
            "trousers",
            (34, 42, 72),
            (218, 218, 216),
            {"title": "Straight-leg chinos", "category": "bottoms", "colour": "navy"},
        ),
        (
            "TSHIRT-WHITE-003",
            "tshirt",
            (240, 240, 237),
            (247, 247, 247),
            {"title": "Organic cotton T-shirt", "category": "tops", "colour": "white"},
        ),
        (
            "DRESS-SAGE-004",
            "dress",
            (118, 140, 112),
            (242, 222, 222),
            {"title": "Slip dress", "category": "dresses", "colour": "sage green"},
        ),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for seed, (sku, garment, garment_rgb, backdrop_rgb, sidecar) in enumerate(examples, start=1):
        sku_dir = directory / sku
        sku_dir.mkdir(exist_ok=True)
        photo = render_product_photo(garment, garment_rgb, backdrop_rgb, size=size, seed=seed)
        written.append(_save_jpeg(photo.image, sku_dir / "front.jpg"))
        (sku_dir / SIDECAR_NAME).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    # A loose photo at the top level: its file name is its SKU.
    hoodie = render_product_photo("hoodie", (92, 94, 98), (245, 245, 245), size=size, seed=len(examples) + 1)
    written.append(_save_jpeg(hoodie.image, directory / "HOODIE-CHARCOAL-005.jpg"))
    return written


def _save_jpeg(image: Image.Image, path: Path) -> Path:
    # No EXIF or timestamps are written, so the bytes depend on the pixels alone.
    image.save(path, "JPEG", quality=90, optimize=False)
    return path


def _render_garment(
    drawing: _GarmentDrawing,
    garment_rgb: tuple[int, int, int],
    box_size: tuple[float, float],
    rng: np.random.Generator,
) -> Image.Image:
    """The garment as an RGBA cutout with fabric shading; alpha is its anti-aliased coverage."""
    box_w, box_h = box_size
    corner_sigma = max(1.0, 0.004 * box_h)  # fabric edges are rounded, never perfectly sharp
    pad = math.ceil(3 * corner_sigma) + 2
    width, height = math.ceil(box_w) + 2 * pad, math.ceil(box_h) + 2 * pad

    def to_pixels(points: tuple[_Point, ...]) -> np.ndarray:
        xy = np.array(points, dtype=np.float64) * (box_w, box_h) + pad
        return np.round(xy * 16).astype(np.int32)  # 4 fractional bits for cv2's sub-pixel drawing

    # 1. Silhouette: jitter the control points a little (symmetrically) so each seed is its own garment.
    jitter = rng.uniform(-0.008, 0.008, size=(len(drawing.right_half), 2))
    right = tuple(
        (min(max(x + (dx if x > 0.5 else 0.0), 0.0), 1.0), min(max(y + dy, 0.0), 1.0))
        for (x, y), (dx, dy) in zip(drawing.right_half, jitter, strict=True)
    )
    polygon = np.zeros((height, width), np.uint8)
    cv2.fillPoly(polygon, [to_pixels(_mirror(right))], 255, lineType=cv2.LINE_8, shift=4)
    # Blurring the hard polygon rounds its corners; re-steepening the ramp to ~1 px gives anti-aliased edges.
    field = cv2.GaussianBlur(polygon.astype(np.float32) / 255.0, (0, 0), corner_sigma)
    coverage = np.clip((field - 0.5) * (corner_sigma * math.sqrt(2 * math.pi)) + 0.5, 0.0, 1.0)
    alpha = np.round(coverage * 255).astype(np.uint8)
    inside = (alpha > 127).astype(np.uint8)

    # 2. Fabric shading, as a luminance multiplier.
    shade = np.ones((height, width), np.float32)
    shade *= _smooth_noise(rng, (height, width), cells=6, amplitude=0.05)
    shade *= _folds(rng, (height, width), drawing.fold_angle_deg, count=5)
    # Fabric turns away from the light at the silhouette, so the rim is darker (real packshots show this too).
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    rim_width = max(2.0, 0.012 * box_w)
    shade *= 1.0 - 0.08 * np.exp(-distance / rim_width)
    # Knit texture: fine ribs.
    period = max(3.0, 0.004 * box_w)
    ribs = 1.0 + 0.012 * np.sin(np.arange(width, dtype=np.float32) * (2 * math.pi / period))
    shade *= ribs[np.newaxis, :]
    details = np.zeros((height, width), np.uint8)
    for region, darkness in drawing.dark_regions:
        curve = to_pixels(_chaikin(region, closed=True))
        cv2.fillPoly(details, [curve], round(255 * darkness), lineType=cv2.LINE_AA, shift=4)
    thickness = max(1, round(0.003 * box_h))
    for line in drawing.lines:
        curve = to_pixels(_chaikin(line, closed=False))
        cv2.polylines(details, [curve], False, 28, thickness, lineType=cv2.LINE_AA, shift=4)
    softened = cv2.GaussianBlur(details, (0, 0), max(0.7, 0.0015 * box_h))
    shade *= 1.0 - softened.astype(np.float32) / 255.0

    # 3. Colour it.
    rgba = np.empty((height, width, 4), np.uint8)
    for channel, value in enumerate(garment_rgb):
        rgba[..., channel] = np.clip(shade * value, 0, 255).astype(np.uint8)
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def _chaikin(points: tuple[_Point, ...], closed: bool, iterations: int = 3) -> tuple[_Point, ...]:
    """Corner cutting: turns a few control points into a smooth curve (necklines, pocket corners)."""
    curve = np.array(points, dtype=np.float64)
    for _ in range(iterations):
        ends = np.roll(curve, -1, axis=0) if closed else curve[1:]
        starts = curve if closed else curve[:-1]
        cut = np.empty((2 * len(starts), 2))
        cut[0::2] = 0.75 * starts + 0.25 * ends
        cut[1::2] = 0.25 * starts + 0.75 * ends
        curve = cut if closed else np.vstack([curve[:1], cut, curve[-1:]])
    return tuple((float(x), float(y)) for x, y in curve)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, amplitude: float) -> np.ndarray:
    """1 + low-frequency variation, as uneven light and fabric tension give."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    smooth = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.asarray(1.0 + amplitude * smooth, dtype=np.float32)


def _folds(rng: np.random.Generator, shape: tuple[int, int], angle_deg: float, count: int) -> np.ndarray:
    """1 + soft folds: a dark trough next to a highlight, fading along the fold."""
    height, width = shape
    # Folds are smooth: compute them at a reduced size and upsample.
    scale = min(1.0, 256 / max(shape))
    small_h, small_w = max(2, round(height * scale)), max(2, round(width * scale))
    ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    xs /= small_w
    ys /= small_h
    result = np.ones((small_h, small_w), np.float32)
    for _ in range(count):
        angle = math.radians(angle_deg * rng.choice([-1.0, 1.0]) + rng.uniform(-12, 12))
        cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.85)
        half_length, half_width = rng.uniform(0.10, 0.25), rng.uniform(0.025, 0.05)
        depth = rng.uniform(0.03, 0.08)
        # Across (u) and along (v) the fold.
        u = ((xs - cx) * math.cos(angle) - (ys - cy) * math.sin(angle)) / half_width
        v = ((xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)) / half_length
        result += depth * 1.6 * u * np.exp(-0.5 * (u * u + v * v))
    return cv2.resize(result, (width, height), interpolation=cv2.INTER_CUBIC)


def _compose(
    cutout: Image.Image,
    backdrop_rgb: tuple[int, int, int],
    size: tuple[int, int],
    offset: tuple[int, int],
    rng: np.random.Generator,
    shadow: bool,
    noise_sigma: float,
) -> SyntheticPhoto:
    """Sweep + shadow + cutout + sensor noise. Works one channel at a time to keep 24 MP frames light."""
    width, height = size
    x0, y0 = offset
    cut = np.asarray(cutout)
    cut_h, cut_w = cut.shape[:2]
    region = (slice(y0, y0 + cut_h), slice(x0, x0 + cut_w))
    truth = np.zeros((height, width), np.uint8)
    truth[region] = np.where(cut[..., 3] > 127, 255, 0).astype(np.uint8)

    # 1. The sweep: the wall is lighter than the floor it curves into, and the lens darkens the corners.
    light = _sweep_light(rng, width, height)

    # 2. The shadow the garment casts (drawn from the rng even when off, so both renders match elsewhere).
    short = min(width, height)
    drop_dx, drop_dy = rng.uniform(0.006, 0.014) * short, rng.uniform(0.010, 0.020) * short
    drop_strength, contact_strength = rng.uniform(0.16, 0.24), rng.uniform(0.10, 0.16)
    if shadow:
        light *= 1.0 - _shadow(truth, (drop_dx, drop_dy), drop_strength, contact_strength)

    # 3. Composite the garment over the lit backdrop, add sensor noise, quantise.
    coverage = cut[..., 3].astype(np.float32) / 255.0
    image = np.empty((height, width, 3), np.uint8)
    channel = np.empty((height, width), np.float32)
    for c, value in enumerate(backdrop_rgb):
        np.multiply(light, float(value), out=channel)
        channel[region] = channel[region] * (1.0 - coverage) + cut[..., c] * coverage
        if noise_sigma > 0:
            channel += rng.standard_normal((height, width), dtype=np.float32) * noise_sigma
        np.clip(channel + 0.5, 0, 255, out=channel)
        image[..., c] = channel.astype(np.uint8)
    return SyntheticPhoto(
        image=Image.fromarray(image, "RGB"),
        product_mask=Image.fromarray(truth, "L"),
        backdrop_rgb=backdrop_rgb,
    )


def _sweep_light(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Backdrop brightness (<= 1): a gentle vertical gradient where wall meets floor, and a vignette."""
    small_w, small_h = 64, max(2, round(64 * height / width))
    ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    yn = ys / (small_h - 1)
    xn = xs / (small_w - 1) * 2 - 1
    horizon = rng.uniform(0.6, 0.8)
    floor = rng.uniform(0.03, 0.06)
    # A smoothstep from wall to floor around the horizon line.
    t = np.clip((yn - horizon + 0.25) / 0.5, 0, 1)
    light = 1.0 - floor * t * t * (3 - 2 * t) - 0.015 * (1 - yn)
    radius2 = xn * xn + (yn * 2 - 1) ** 2
    light *= 1.0 - rng.uniform(0.02, 0.04) * radius2 / 2
    return cv2.resize(light.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def _shadow(truth: np.ndarray, drop: tuple[float, float], drop_strength: float, contact_strength: float) -> np.ndarray:
    """Darkening in [0, 1): a soft drop shadow offset from the garment plus a tighter contact shadow."""
    height, width = truth.shape
    # Shadows are soft, so compute them at a reduced size.
    scale = min(1.0, 400 / max(height, width))
    small = (
        cv2.resize(
            truth, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        ).astype(np.float32)
        / 255.0
    )
    short = min(small.shape)
    shift = np.array([[1, 0, drop[0] * scale], [0, 1, drop[1] * scale]], dtype=np.float32)
    dropped = cv2.warpAffine(small, shift, (small.shape[1], small.shape[0]))
    drop_shadow = cv2.GaussianBlur(dropped, (0, 0), 0.02 * short)
    contact = cv2.GaussianBlur(small, (0, 0), 0.006 * short)
    darkening = drop_strength * drop_shadow + contact_strength * contact
    return cv2.resize(darkening, (width, height), interpolation=cv2.INTER_LINEAR)
