"""Pixel-level image metrics, one implementation for the pipeline's automatic checks and `catalog compare`.

Every metric declares what it rests on (`METRICS[name].source`), so a report can say which numbers need no weights
and which need a configured model. The product-fidelity metrics compare a generated image with the product as it
was placed (an RGBA canvas, alpha = product) wherever the product ended up: at the placement it was given, or, when
an engine moved or rescaled it, where template matching finds it (`locate_product`).

    placed = np.asarray(Image.open("placed.png").convert("RGBA"))
    found = locate_product(output_rgb, placed)                 # where the product is in the output, and at what scale
    fidelity = product_fidelity(output_rgb, found)             # preserved share, ΔE2000, silhouette IoU
    sanity = image_sanity(output_rgb)                          # blur, exposure

OpenCV and scikit-image are imported by the metrics that use them, so that the automatic checks (which only
compare pixels) import neither. No torch here: the embedding metrics (CLIP-T, CLIP-I) live in `gpu_jobs.embeddings`
and are declared below only so that the report can name them and their source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "METRICS",
    "MetricSpec",
    "PixelDifferences",
    "ProductLocation",
    "agree",
    "image_sanity",
    "locate_product",
    "product_fidelity",
    "region_differences",
    "share_text",
]

MASK_THRESHOLD = 128  # alpha / mask values at or above this are "in"; the recipes write 0/255
PRESERVED_TOLERANCE = 2  # levels per channel a kept pixel may move (PNG round trips, colour conversions)
CLIPPED_DARK, CLIPPED_BRIGHT = 3, 252  # luminance at or beyond these is clipped shadow / highlight
BLUR_WORKING_SIDE = 256  # the Laplacian is measured at this size so scores compare across resolutions


@dataclass(frozen=True)
class MetricSpec:
    """What a metric measures, on what it rests, and which way is better."""

    name: str
    label: str
    source: str
    better: Literal["higher", "lower", "neither"]
    needs: Literal["nothing", "embedding model", "nsfw classifier", "timing", "price table"] = "nothing"
    unit: str = ""


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "product_pixels_preserved",
            "product pixels kept",
            "pixels: share of the product's kept pixels within 2 levels of the source (no weights); "
            "the same comparison the automatic product-pixel check flags",
            "higher",
            unit="share",
        ),
        MetricSpec(
            "garment_delta_e",
            "garment ΔE2000",
            "pixels: mean CIEDE2000 colour difference over the product, output vs source garment "
            "(scikit-image, CIELAB D65; no weights)",
            "lower",
        ),
        MetricSpec(
            "silhouette_iou",
            "silhouette IoU",
            "pixels: IoU of the source product mask and the product segmented in the output by OpenCV GrabCut "
            "seeded with that mask (no weights)",
            "higher",
            unit="share",
        ),
        MetricSpec(
            "product_found_scale",
            "product scale",
            "pixels: the scale at which template matching found the product (1 = where it was placed)",
            "neither",
        ),
        MetricSpec(
            "sharpness",
            "sharpness",
            "pixels: variance of the Laplacian of the grey image at 256 px (higher is sharper; no weights)",
            "higher",
        ),
        MetricSpec(
            "exposure_mean",
            "mean luminance",
            "pixels: mean Rec. 709 luma, 0-255 (no weights)",
            "neither",
        ),
        MetricSpec(
            "exposure_clipped",
            "clipped share",
            f"pixels: share of pixels at luma <= {CLIPPED_DARK} or >= {CLIPPED_BRIGHT} (no weights)",
            "lower",
            unit="share",
        ),
        MetricSpec(
            "clip_t",
            "prompt adherence (CLIP-T)",
            "embedding model: cosine of the image and prompt embeddings x 100, from the configured local CLIP",
            "higher",
            needs="embedding model",
        ),
        MetricSpec(
            "clip_i_brand",
            "brand similarity (CLIP-I)",
            "embedding model: mean cosine of the image embedding with the brand's training photos, from the "
            "configured local CLIP/DINO image encoder",
            "higher",
            needs="embedding model",
        ),
        MetricSpec(
            "nsfw_score",
            "NSFW score",
            "classifier: probability of unsafe content from the configured local classifier",
            "lower",
            needs="nsfw classifier",
        ),
        MetricSpec("seconds", "seconds per image", "timing: wall-clock seconds the engine took", "lower", "timing"),
        MetricSpec(
            "cost", "cost per image", "price table: the engine's price per image (editable)", "lower", "price table"
        ),
    )
}


# ---- preserved pixels: shared with the automatic checks ------------------------------------------------------------
@dataclass(frozen=True)
class PixelDifferences:
    """Where and by how much an output departs from what it promised, within a checked region."""

    changed: int
    checked: int
    largest: int
    at: tuple[int, int]  # (x, y) of the largest difference

    @property
    def preserved_share(self) -> float:
        return 1.0 - self.changed / max(1, self.checked)

    def describe(self, pixels: str, reference: str) -> str:
        """E.g. "3 of the 400 kept product pixels (0.75%) differ from placed.png by up to 37 levels (...)"."""
        return (
            f"{self.changed} of the {self.checked} {pixels} ({share_text(self.changed, self.checked)}) "
            f"{agree(self.changed, 'differs', 'differ')} from {reference} by up to {self.largest} levels "
            f"(the largest at x={self.at[0]}, y={self.at[1]})"
        )


def agree(count: int, singular: str, plural: str) -> str:
    return singular if count == 1 else plural


def share_text(part: int, whole: int) -> str:
    """A percentage a reviewer reads at a glance; a single pixel of millions is not rounded to 0%."""
    percent = 100.0 * part / max(1, whole)
    if 0 < percent < 0.01:
        return "under 0.01%"
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2f}%"


def region_differences(
    output: np.ndarray, expected: np.ndarray, region: np.ndarray, tolerance: int
) -> PixelDifferences | None:
    """None when every pixel in `region` is within `tolerance` per channel of `expected`."""
    difference = np.abs(output.astype(np.int16) - expected.astype(np.int16))
    per_pixel = difference.max(axis=2) if difference.ndim == 3 else difference
    per_pixel = np.where(region, per_pixel, 0)
    changed = per_pixel > tolerance
    if not changed.any():
        return None
    y, x = np.unravel_index(int(np.argmax(per_pixel)), per_pixel.shape)
    return PixelDifferences(int(changed.sum()), int(region.sum()), int(per_pixel[y, x]), (int(x), int(y)))


# ---- where the product is ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductLocation:
    """The source product as it should appear in the output: its RGB and mask on the output's canvas."""

    reference_rgb: np.ndarray  # HxWx3, the source pixels where `mask` is set
    mask: np.ndarray  # HxW bool, the product's pixels in the output
    keep: np.ndarray  # HxW bool, the pixels that must be kept exactly (the recipe's keep mask, or `mask`)
    scale: float  # 1.0: exactly where it was placed
    moved: bool  # True when template matching had to find it elsewhere


def locate_product(
    output_rgb: np.ndarray,
    placed_rgba: np.ndarray,
    keep: np.ndarray | None = None,
    scales: tuple[float, ...] = (1.0, 0.9, 1.1, 0.8, 1.25, 0.67, 0.5),
) -> ProductLocation:
    """Where the placed product is in `output_rgb`: at its placement when it is still there, else the best masked
    template match over a few scales (an engine that re-frames the scene moves or rescales the product).

    `keep` is the region promised exact at the placement (our recipe repaints a thin band at the product's edge);
    default: the whole product."""
    if output_rgb.shape[:2] != placed_rgba.shape[:2]:
        raise ValueError(
            f"the output is {output_rgb.shape[1]}x{output_rgb.shape[0]}, the placed product "
            f"{placed_rgba.shape[1]}x{placed_rgba.shape[0]}: compare images of one size"
        )
    import cv2

    mask = placed_rgba[..., 3] >= MASK_THRESHOLD
    if not mask.any():
        raise ValueError("the placed product's mask is empty")
    keep = mask if keep is None else keep
    at_placement = region_differences(output_rgb, placed_rgba[..., :3], keep, PRESERVED_TOLERANCE)
    if at_placement is None or at_placement.preserved_share >= 0.5:
        return ProductLocation(placed_rgba[..., :3].copy(), mask, keep, 1.0, False)
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    crop = placed_rgba[top:bottom, left:right]
    height, width = output_rgb.shape[:2]
    best: tuple[float, float, int, int, np.ndarray] | None = None
    for scale in scales:
        size = (max(4, round(crop.shape[1] * scale)), max(4, round(crop.shape[0] * scale)))
        if size[0] > width or size[1] > height:
            continue
        template = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        template_mask = (template[..., 3] >= MASK_THRESHOLD).astype(np.uint8)
        if not template_mask.any():
            continue
        scores = cv2.matchTemplate(
            output_rgb.astype(np.float32),
            template[..., :3].astype(np.float32),
            cv2.TM_SQDIFF,
            mask=np.repeat(template_mask[..., None], 3, axis=2).astype(np.float32),
        )
        low, _, (x, y), _ = cv2.minMaxLoc(scores)
        per_pixel = low / float(template_mask.sum())
        if best is None or per_pixel < best[0]:
            best = (per_pixel, scale, x, y, template)
    if best is None:  # nothing fits: fall back to the placement, and the metrics will say it is not there
        return ProductLocation(placed_rgba[..., :3].copy(), mask, keep, 1.0, False)
    _, scale, x, y, template = best
    reference = np.zeros_like(output_rgb)
    found = np.zeros(mask.shape, dtype=bool)
    reference[y : y + template.shape[0], x : x + template.shape[1]] = template[..., :3]
    found[y : y + template.shape[0], x : x + template.shape[1]] = template[..., 3] >= MASK_THRESHOLD
    moved = (x, y) != (left, top) or scale != 1.0
    return ProductLocation(reference, found, found if moved else keep, scale, moved)


# ---- product fidelity ----------------------------------------------------------------------------------------------
def product_fidelity(output_rgb: np.ndarray, location: ProductLocation) -> dict[str, float]:
    """Preserved share, mean ΔE2000 and silhouette IoU of the product in the output (no weights)."""
    mask = location.mask
    differences = region_differences(output_rgb, location.reference_rgb, location.keep, PRESERVED_TOLERANCE)
    preserved = 1.0 if differences is None else differences.preserved_share
    return {
        "product_pixels_preserved": round(preserved, 4),
        "garment_delta_e": round(garment_delta_e(output_rgb, location.reference_rgb, mask), 3),
        "silhouette_iou": round(silhouette_iou(output_rgb, mask), 4),
        "product_found_scale": location.scale,
    }


def garment_delta_e(output_rgb: np.ndarray, reference_rgb: np.ndarray, mask: np.ndarray) -> float:
    """Mean CIEDE2000 difference over the mask (0: the same colours; ~2.3: just noticeable)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    if not mask.any():
        raise ValueError("the garment mask is empty")
    lab_output = rgb2lab(output_rgb[mask][None].astype(np.float64) / 255.0)
    lab_reference = rgb2lab(reference_rgb[mask][None].astype(np.float64) / 255.0)
    return float(np.mean(deltaE_ciede2000(lab_reference, lab_output)))


SILHOUETTE_WORKING_SIDE = 256  # GrabCut runs at this size at most: the outline, not the texture, is what counts
SILHOUETTE_SEEDS = (0, 1, 2)  # GrabCut's GMMs start from k-means on OpenCV's global RNG


def silhouette_iou(output_rgb: np.ndarray, expected_mask: np.ndarray, iterations: int = 3) -> float:
    """IoU of `expected_mask` and the object GrabCut segments in the output, seeded with that mask.

    Pixels inside the mask start as probable foreground, a band around it as probable background and the rest as
    sure background; a product whose outline the engine changed loses (or gains) pixels and its IoU drops. GrabCut
    starts from k-means on OpenCV's global random state, so it runs from fixed seeds (the same image always scores
    the same, whatever ran before) and the median is kept: one start that collapses to nothing does not decide.
    """
    import cv2

    if not expected_mask.any():
        raise ValueError("the expected mask is empty")
    scale = SILHOUETTE_WORKING_SIDE / max(expected_mask.shape)
    if scale < 1:
        size = (max(1, round(expected_mask.shape[1] * scale)), max(1, round(expected_mask.shape[0] * scale)))
        output_rgb = cv2.resize(output_rgb, size, interpolation=cv2.INTER_AREA)
        expected_mask = cv2.resize(expected_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    height, width = expected_mask.shape
    side = max(3, round(0.08 * max(height, width)) | 1)
    grown = cv2.dilate(expected_mask.astype(np.uint8), np.ones((side, side), np.uint8)).astype(bool)
    start = np.full(expected_mask.shape, cv2.GC_BGD, np.uint8)
    start[grown] = cv2.GC_PR_BGD
    start[expected_mask] = cv2.GC_PR_FGD
    if grown.all():  # GrabCut needs some background to learn from
        start[0, :] = start[-1, :] = cv2.GC_BGD
    bgr = np.ascontiguousarray(output_rgb[..., ::-1])
    scores = []
    for seed in SILHOUETTE_SEEDS:
        seeds = start.copy()
        background_model, foreground_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(seed)
        try:
            cv2.grabCut(bgr, seeds, None, background_model, foreground_model, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
        except cv2.error:  # a single-colour image has no second colour cluster to learn: nothing separable
            return 0.0
        segmented = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
        union = int((segmented | expected_mask).sum())
        scores.append(float((segmented & expected_mask).sum()) / max(1, union))
    return float(np.median(scores))


# ---- image sanity --------------------------------------------------------------------------------------------------
def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian at a fixed working size: low on a blurred or flat image."""
    import cv2

    grey = luma(rgb)
    scale = BLUR_WORKING_SIDE / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(
            grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def image_sanity(rgb: np.ndarray) -> dict[str, float]:
    """Blur and exposure of one image (no weights)."""
    values = luma(rgb)
    clipped = (values <= CLIPPED_DARK) | (values >= CLIPPED_BRIGHT)
    return {
        "sharpness": round(sharpness(rgb), 2),
        "exposure_mean": round(float(values.mean()), 2),
        "exposure_clipped": round(float(clipped.mean()), 4),
    }


# ---- warnings from the metrics (the report's and the learning loop's, beside the automatic checks' flags) ----------
@dataclass(frozen=True)
class MetricWarning:
    code: str
    metric: str
    above: bool  # True: warn above the limit; False: below it
    limit: float

    def applies(self, metrics: Mapping[str, float | None]) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            return False
        return value > self.limit if self.above else value < self.limit


METRIC_WARNINGS = (
    MetricWarning("colour_shift", "garment_delta_e", above=True, limit=5.0),
    MetricWarning("silhouette_changed", "silhouette_iou", above=False, limit=0.8),
    MetricWarning("blurry", "sharpness", above=False, limit=15.0),
    MetricWarning("badly_exposed", "exposure_clipped", above=True, limit=0.25),
)


def metric_warnings(metrics: Mapping[str, float | None]) -> list[str]:
    """The warning codes `metrics` trip (e.g. `colour_shift` past ΔE2000 5)."""
    return [warning.code for warning in METRIC_WARNINGS if warning.applies(metrics)]
