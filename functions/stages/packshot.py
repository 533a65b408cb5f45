"""Packshots: the product cut out, scaled to a fill ratio and centred on a square canvas, plus the checks
a reviewer needs to trust it (cropped product, background not removed, stray parts, upscaling)."""

import math
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from functions.encoding import OutputFormat, check_output_format, check_quality
from functions.errors import CatalogError
from schemas import Box, QualityFlag, Severity

# Mask values at or below this are backdrop noise, not product: they neither count nor show.
MASK_NOISE_FLOOR = 8
# A connected part smaller than this share of the product's area is a speck: ignored when framing and counting.
SPECK_FRACTION = 0.005
MIN_COVERAGE = 0.01
MAX_COVERAGE = 0.95
# Upscaling by less than this is hardly visible, so it is only worth an info flag.
NOTICEABLE_UPSCALE = 1.25

MIN_SIZE, MAX_SIZE = 64, 10_000
MIN_FILL_RATIO, MAX_FILL_RATIO = 0.1, 1.0

# Contact shadow: at most this dark, and it fades out at least this far (share of the canvas) from the edges.
SHADOW_MAX_DARKNESS = 0.22
SHADOW_EDGE_CLEARANCE = 0.02

_WHITE = (255, 255, 255)
_WHITE_PIXEL = np.full((1, 1, 1), 255, np.uint8)  # the white backdrop as `_over_background` takes it


class PackshotPreset(StrEnum):
    WHITE_SQUARE = "white-square"
    TRANSPARENT = "transparent"
    SHADOW = "shadow"


@dataclass(frozen=True)
class PackshotSettings:
    """How to frame a packshot. Invalid combinations raise ValueError when the settings are made."""

    preset: PackshotPreset = PackshotPreset.WHITE_SQUARE
    size: int = 2000
    fill_ratio: float = 0.85
    output_format: OutputFormat | None = None
    quality: int = 92

    def __post_init__(self) -> None:
        try:
            preset = PackshotPreset(self.preset)
        except ValueError:
            choices = ", ".join(p.value for p in PackshotPreset)
            raise ValueError(f"unknown packshot preset {self.preset!r}; use one of: {choices}") from None
        # Frozen dataclass: accept the preset's string value (from a CLI or JSON) but store the enum.
        object.__setattr__(self, "preset", preset)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {self.size!r}")
        if (
            isinstance(self.fill_ratio, bool)
            or not isinstance(self.fill_ratio, int | float)
            or not MIN_FILL_RATIO < self.fill_ratio <= MAX_FILL_RATIO
        ):
            raise ValueError(
                f"fill_ratio must be greater than {MIN_FILL_RATIO} and at most {MAX_FILL_RATIO}, "
                f"got {self.fill_ratio!r}"
            )
        if self.output_format is not None:
            check_output_format(self.output_format)
        check_quality(self.quality)
        if preset is PackshotPreset.TRANSPARENT and self.output_format == "jpeg":
            raise ValueError("the transparent preset needs png or webp: jpeg cannot keep transparency")

    @property
    def resolved_format(self) -> OutputFormat:
        """The output format, defaulting to jpeg for opaque presets and png for the transparent one."""
        if self.output_format is not None:
            return self.output_format
        return "png" if self.preset is PackshotPreset.TRANSPARENT else "jpeg"

    @property
    def product_side(self) -> int:
        """Length, in canvas px, of the product's longer side."""
        return round(self.fill_ratio * self.size)


@dataclass(frozen=True)
class Packshot:
    image: Image.Image
    """size x size; RGB for white-square and shadow, RGBA for transparent."""
    placement: Box
    """Where the product's bounding box landed on the canvas."""
    scale: float
    """Canvas px per source px."""


@dataclass(frozen=True)
class MaskParts:
    """The significant connected parts of a product mask (specks left out): found once per mask (`find_mask_parts`)
    and shared by `compose_packshot` and `quality_checks`, as a 24 MP mask takes a while to label."""

    width: int
    height: int
    product_pixels: int
    # One row per significant part: left, top, width, height, area (OpenCV's stats layout).
    stats: np.ndarray = field(repr=False)

    @property
    def coverage(self) -> float:
        return self.product_pixels / (self.width * self.height)

    @property
    def box(self) -> Box | None:
        if len(self.stats) == 0:
            return None
        left, top = self.stats[:, 0], self.stats[:, 1]
        right, bottom = left + self.stats[:, 2], top + self.stats[:, 3]
        return Box(left=int(left.min()), top=int(top.min()), right=int(right.max()), bottom=int(bottom.max()))

    @property
    def edges_touched(self) -> tuple[str, ...]:
        left, top = self.stats[:, 0], self.stats[:, 1]
        right, bottom = left + self.stats[:, 2], top + self.stats[:, 3]
        touched = {
            "top": bool((top == 0).any()),
            "bottom": bool((bottom == self.height).any()),
            "left": bool((left == 0).any()),
            "right": bool((right == self.width).any()),
        }
        return tuple(edge for edge, hit in touched.items() if hit)


def find_mask_parts(mask: Image.Image) -> MaskParts:
    """The significant parts of a mode-L product mask."""
    _check_mask(mask)
    product = np.asarray(mask) > MASK_NOISE_FLOOR
    product_pixels = int(np.count_nonzero(product))
    if product_pixels == 0:
        return MaskParts(mask.width, mask.height, 0, np.empty((0, 5), dtype=np.int32))
    # Label only the product's bounding box (the same parts; on a 24 MP photo the backdrop is much of the frame).
    left, top, width, height = cv2.boundingRect(product.view(np.uint8))
    inside = product[top : top + height, left : left + width].view(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(inside, connectivity=8)
    parts = stats[1:]  # row 0 is the background
    parts[:, cv2.CC_STAT_LEFT] += left
    parts[:, cv2.CC_STAT_TOP] += top
    areas = parts[:, cv2.CC_STAT_AREA]
    # The largest part always counts, so a product made only of small pieces is still found.
    significant = parts[(areas >= SPECK_FRACTION * product_pixels) | (areas == areas.max())]
    return MaskParts(mask.width, mask.height, product_pixels, significant)


def _check_mask(mask: Image.Image) -> None:
    if mask.mode != "L":
        raise ValueError(f"the product mask must be mode L (255 = product), got {mask.mode}")


def _check_inputs(image: Image.Image, mask: Image.Image) -> None:
    if image.mode not in ("RGB", "RGBA"):
        raise ValueError(f"the image must be mode RGB or RGBA, got {image.mode}")
    _check_mask(mask)
    if image.size != mask.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")


def _over_background(premultiplied: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Composite premultiplied RGBa pixels over opaque background pixels (H x W x 1, or 1 x 1 x 1 for one value).

    Working premultiplied means an edge pixel's colour never borrows from the (often black) colour
    under transparent pixels: no dark halos. Saturation absorbs Lanczos overshoot, where colour > alpha.
    Exact integer arithmetic: colour + round((255 - alpha) * background / 255), clipped at 255 (OpenCV rounds to
    nearest, and a product of two bytes over 255 is never exactly half-way).
    """
    colour = cv2.cvtColor(premultiplied, cv2.COLOR_RGBA2RGB)
    see_through = cv2.bitwise_not(cv2.extractChannel(premultiplied, 3))
    if background.shape[:2] == (1, 1):
        # One value for all: a scalar product, with no full-size copy of it (white is half the time of a packshot)
        under = cv2.convertScaleAbs(see_through, alpha=float(background[0, 0, 0]) / 255)
    else:
        under = cv2.multiply(see_through, np.ascontiguousarray(background[..., 0]), scale=1 / 255)
    return np.asarray(cv2.add(colour, cv2.cvtColor(under, cv2.COLOR_GRAY2RGB)))


def _contact_shadow(alpha: np.ndarray, placement: Box, canvas_size: int) -> Image.Image:
    """Canvas-sized L background: 255 everywhere but a soft, flattened ellipse under the product's base.

    The ellipse spans the product's lowest rows (its footprint), sits a little below them, and is sized
    so that its blur dies out before the canvas edges. Where there is no room below, there is no shadow.
    """
    background = Image.new("L", (canvas_size, canvas_size), 255)
    clearance = max(2, round(SHADOW_EDGE_CLEARANCE * canvas_size))

    # 1. the footprint: columns covered by the product in its lowest few rows
    rows = np.flatnonzero((alpha > MASK_NOISE_FLOOR).any(axis=1))
    if len(rows) == 0:
        return background
    base_row = int(rows[-1])
    band = alpha[max(0, base_row - max(2, alpha.shape[0] // 30)) : base_row + 1]
    columns = np.flatnonzero((band > MASK_NOISE_FLOOR).any(axis=0))
    centre_x = placement.left + (int(columns[0]) + int(columns[-1]) + 1) / 2
    base_y = placement.top + base_row + 1

    # 2. the ellipse: a bit wider than the footprint, very flat, blurred by about its own height
    radius_x = max(4.0, 0.55 * (int(columns[-1]) - int(columns[0]) + 1))
    radius_y = max(2.0, 0.08 * radius_x)
    blur = max(1.0, 0.8 * radius_y)
    drop = 0.4 * radius_y

    # 3. fit it in the room left below and beside the product (a box blur reaches ~3 radii)
    room_below = canvas_size - clearance - base_y
    shrink = min(1.0, room_below / (drop + radius_y + 3 * blur))
    if shrink <= 0.05:
        return background
    radius_y, blur, drop = radius_y * shrink, max(1.0, blur * shrink), drop * shrink
    room_beside = min(centre_x, canvas_size - centre_x) - clearance - 3 * blur
    radius_x = min(radius_x, room_beside)
    if radius_x < 2:
        return background

    # 4. draw and blur it on a small tile, then lay it on the canvas
    margin = math.ceil(3 * blur) + 2
    tile_left = math.floor(centre_x - radius_x) - margin
    tile_top = math.floor(base_y + drop - radius_y) - margin
    tile_w = math.ceil(2 * radius_x) + 2 * margin + 1
    tile_h = math.ceil(2 * radius_y) + 2 * margin + 1
    darkness = Image.new("L", (tile_w, tile_h), 0)
    ellipse_box = (
        centre_x - radius_x - tile_left,
        base_y + drop - radius_y - tile_top,
        centre_x + radius_x - tile_left,
        base_y + drop + radius_y - tile_top,
    )
    ImageDraw.Draw(darkness).ellipse(ellipse_box, fill=round(255 * SHADOW_MAX_DARKNESS))
    darkness = darkness.filter(ImageFilter.GaussianBlur(blur))
    background.paste(ImageOps.invert(darkness), (tile_left, tile_top))

    # 5. a hard guarantee behind the fitting above: the border band stays pure white
    border = np.asarray(background).copy()
    border[:clearance], border[-clearance:], border[:, :clearance], border[:, -clearance:] = 255, 255, 255, 255
    return Image.fromarray(border, "L")


def compose_packshot(
    image: Image.Image, mask: Image.Image, settings: PackshotSettings, parts: MaskParts | None = None
) -> Packshot:
    """Cut the product out with its mask, scale it to the fill ratio and centre it on a square canvas.

    The product's box ignores specks (parts under 0.5% of its area) and mask values <= 8; the crop
    happens first, so the resampling and compositing run at the output size. Raises CatalogError
    `empty_mask` when the mask holds no product.
    """
    # 1. check inputs
    _check_inputs(image, mask)
    parts = parts if parts is not None else find_mask_parts(mask)
    source_box = parts.box
    if source_box is None:
        raise CatalogError("empty_mask", "The product mask is empty, so there is no product to place.")

    # 2. crop to the product, with the backdrop noise under the floor made fully transparent, premultiplied (RGBa)
    #    so that edges keep their colour when scaled
    crop = (source_box.left, source_box.top, source_box.right, source_box.bottom)
    premultiplied = _premultiplied_cutout(image.crop(crop), mask.crop(crop))

    # 3. scale so the longer side is exactly `product_side`
    source_w, source_h = premultiplied.size
    scale = settings.product_side / max(source_w, source_h)
    target = (
        max(1, min(settings.product_side, round(source_w * scale))),
        max(1, min(settings.product_side, round(source_h * scale))),
    )
    product = _scaled(premultiplied, target)  # RGBa pixels

    # 4. centre it
    left, top = (settings.size - target[0]) // 2, (settings.size - target[1]) // 2
    placement = Box(left=left, top=top, right=left + target[0], bottom=top + target[1])
    canvas_size = (settings.size, settings.size)

    # 5. composite for the preset
    if settings.preset is PackshotPreset.TRANSPARENT:
        straight = np.asarray(Image.frombuffer("RGBa", target, product, "raw", "RGBa", 0, 1).convert("RGBA")).copy()
        straight[straight[..., 3] == 0] = 0  # one colour under full transparency: reproducible bytes
        canvas = Image.new("RGBA", canvas_size, (0, 0, 0, 0))
        canvas.paste(Image.fromarray(straight, "RGBA"), (left, top))
        return Packshot(image=canvas, placement=placement, scale=scale)

    if settings.preset is PackshotPreset.SHADOW:
        shadow = _contact_shadow(product[..., 3], placement, settings.size)
        canvas = Image.merge("RGB", (shadow, shadow, shadow))
        under_product = np.asarray(shadow.crop((placement.left, placement.top, placement.right, placement.bottom)))
        composited = Image.fromarray(_over_background(product, under_product[..., np.newaxis]), "RGB")
    else:
        canvas = Image.new("RGB", canvas_size, _WHITE)
        composited = Image.fromarray(_over_background(product, _WHITE_PIXEL), "RGB")
    canvas.paste(composited, (left, top))
    return Packshot(image=canvas, placement=placement, scale=scale)


def _scaled(premultiplied: Image.Image, target: tuple[int, int]) -> np.ndarray:
    """The RGBa product's pixels at `target` size: Lanczos to shrink, bicubic to enlarge.

    Shrinking needs Lanczos' antialiasing (reducing_gap: a box pre-reduction on big downscales, the same look,
    several times faster). Enlarging has nothing to antialias, and OpenCV's bicubic is within a grey level or two of
    Pillow's Lanczos there (see tests/unit/test_packshot.py) at a tenth of the time: the 2000 px packshot of a
    600x800 photo is mostly enlargement.
    """
    if target[0] <= premultiplied.width and target[1] <= premultiplied.height:
        return np.asarray(premultiplied.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0))
    return np.asarray(cv2.resize(np.asarray(premultiplied), target, interpolation=cv2.INTER_CUBIC))


def _premultiplied_cutout(image: Image.Image, mask: Image.Image) -> Image.Image:
    """RGBa: the image's colours times alpha = the mask with values <= MASK_NOISE_FLOOR cleared (times any own alpha).

    The same pixels as `make_cutout(...).convert("RGBa")` (premultiplying zeroes what is fully transparent anyway),
    without the cutout's separate zeroing pass over the whole crop.
    """
    alpha = mask.point([0] * (MASK_NOISE_FLOOR + 1) + list(range(MASK_NOISE_FLOOR + 1, 256)))
    if image.mode == "RGBA":
        # round(own * mask / 255), as make_cutout does
        own = np.asarray(image.getchannel("A"))
        alpha = Image.fromarray(cv2.multiply(own, np.asarray(alpha), scale=1 / 255), "L")
    # Bands merged with the alpha, rather than convert("RGBA") and putalpha: one copy fewer (15 ms of a 24 MP photo's).
    red, green, blue = image.split()[:3]
    return Image.merge("RGBA", (red, green, blue, alpha)).convert("RGBa")


def quality_checks(
    mask: Image.Image, settings: PackshotSettings, parts: MaskParts | None = None
) -> tuple[QualityFlag, ...]:
    """Flags for the reviewer about a product mask and the packshot it will make; empty when all is well.

    `parts` is `find_mask_parts(mask)` when the caller already has it."""
    _check_mask(mask)
    parts = parts if parts is not None else find_mask_parts(mask)
    box = parts.box
    if box is None:
        return (
            QualityFlag(
                code="mask_too_small",
                message="No product was found in the photo (the mask is empty); check the photo or the "
                "background removal.",
            ),
        )

    flags: list[QualityFlag] = []
    edges = parts.edges_touched
    if edges:
        flags.append(
            QualityFlag(
                code="touches_edge",
                message=f"The product reaches the photo's {_join(edges)} "
                f"{'edge' if len(edges) == 1 else 'edges'}, so it is probably cropped; "
                "check that none of it is missing, or reshoot with room around it.",
            )
        )
    if parts.coverage < MIN_COVERAGE:
        flags.append(
            QualityFlag(
                code="mask_too_small",
                message=f"The product covers only {parts.coverage:.2%} of the photo; check that the mask "
                "found the whole product and not just part of it.",
            )
        )
    if parts.coverage > MAX_COVERAGE:
        flags.append(
            QualityFlag(
                code="mask_too_large",
                message=f"The product mask covers {parts.coverage:.0%} of the photo, so the background "
                "was probably not removed; check the cutout or try another background engine.",
            )
        )
    if len(parts.stats) > 1:
        flags.append(
            QualityFlag(
                code="multiple_parts",
                message=f"The mask has {len(parts.stats)} separate parts, each at least "
                f"{SPECK_FRACTION:.1%} of the product; check that they are all product and not "
                "leftover background.",
            )
        )
    longer_side = max(box.right - box.left, box.bottom - box.top)
    upscale = settings.product_side / longer_side
    if upscale > 1:
        flags.append(
            QualityFlag(
                code="low_resolution",
                severity=Severity.INFO if upscale < NOTICEABLE_UPSCALE else Severity.WARNING,
                message=f"The product is {longer_side} px on its longer side but must fill "
                f"{settings.product_side} px of the {settings.size} px packshot, so it is upscaled "
                f"{upscale:.2f}x; check it for softness, or use a higher-resolution photo.",
            )
        )
    return tuple(flags)


def _join(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
