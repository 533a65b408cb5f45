"""The backdrop keyer: a weight-free cutout for products shot on a seamless studio sweep.

Background is what looks like the backdrop *and* is connected to the frame's edge, so a white print inside a dark
shirt stays in. The backdrop is modelled as a smooth colour field fitted to the border (sweeps are not flat);
soft shadows count as backdrop because they are only darker, not a different colour, and ramp in gently where a
product's edge is a step. The rough mask is made at a working resolution; its edge is re-estimated at full size.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from functions.encoding import image_array
from functions.errors import BackgroundRemovalError
from functions.stages.background.base import BackgroundResult

_ALPHA_OPAQUE = 128  # RGBA pixels below this alpha are background whatever their colour
# Working px kept around the edges and what is not plain backdrop: more than the reach of the filters that key the
# box (the opening 2, the win-back 3, the moat's contact 1, the clean-up's closing 2 and opening 1).
_KEYING_MARGIN_PX = 16
_KEYING_BOX_MAX_SHARE = 0.8  # a box this much of the frame is keyed as the whole frame
_MIN_RING_WEIGHT = 0.02  # a local colour is known where its ring's Gaussian weight nearby is above this


@dataclass(frozen=True)
class BackdropKeyerSettings:
    """Tuning for `BackdropKeyer`; colour distances are CIE76 ΔE in CIELAB unless said otherwise."""

    working_long_side: int = 1024  # long side (px) the backdrop and rough mask are estimated at
    border_px: int = 4  # width (working px) of the frame band the backdrop is learnt from
    min_backdrop_border_share: float = 0.6  # share of that band that must fit one smooth backdrop, else no_backdrop
    backdrop_tolerance_de: float = 5.0  # this close to the backdrop model = backdrop (when reachable from the edge)
    exact_backdrop_de: float = 1.5  # this close is the backdrop itself (a thin moat of it is background)
    max_moat_px: float = 6.0  # half-width (working px) beyond which such a region is kept as product
    shadow_chroma_tolerance_de: float = 4.0  # a darker pixel whose colour, brightened back, is this close = shadow
    shadow_max_darkening: float = 0.45  # shadows darken (L*+16) by at most this share; anything darker is product
    edge_threshold_de_per_px: float = 0.4  # smallest colour gradient (ΔE/px) that can be a product edge
    edge_noise_factor: float = 2.5  # ... and it must be this many times the backdrop's own (90th pct) gradient
    edge_min_step_de: float = 3.5  # an edge must separate colours this far apart (within 5 px)
    ringing_ratio: float = 0.3  # gradients this much fainter than a stronger one within 4 px are ringing
    min_edge_px: int = 12  # edge fragments smaller than this (working px) are ringing or dust
    edge_sharpness: float = 1.3  # an edge's gradient must drop by this factor when blurred (a ramp's does not)
    min_product_share: float = 0.002  # smallest product, as a share of the frame, before no_product_found
    min_component_share: float = 0.02  # product pieces smaller than this share of the largest are dropped as specks
    band_px: int = 3  # half-width (working px) of the band around the rough edge that is re-estimated at full size
    matting_min_contrast: float = 6.0  # RGB distance between product and backdrop needed to re-estimate the edge
    feather_px: float = 1.0  # sigma (full-size px) of the blur that softens the final edge
    full_confidence_de: float = 25.0  # contrast across the edge that earns confidence 1
    low_confidence_de: float = 10.0  # below this contrast across the edge the cutout is flagged for a look


@dataclass(frozen=True)
class _EdgeColours:
    """Local colours just inside (the product's) and just outside (the backdrop's) the product's edge.

    Held as Gaussian-weighted sums (colour x weight, weight) over the box `top`, `left` + shape around the edge band;
    a mean is divided out only at the pixels read."""

    top: int
    left: int
    product_sums: np.ndarray
    backdrop_sums: np.ndarray

    def at(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Product and backdrop colours (N x 3) at working-grid pixels inside the box, and whether both are known
        (enough of their ring is near)."""
        index = (ys - self.top) * self.product_sums.shape[1] + (xs - self.left)
        product = self.product_sums.reshape(-1, 4)[index]
        backdrop = self.backdrop_sums.reshape(-1, 4)[index]
        known = (product[:, 3] > _MIN_RING_WEIGHT) & (backdrop[:, 3] > _MIN_RING_WEIGHT)
        return (
            product[:, :3] / np.maximum(product[:, 3:], 1e-6),
            backdrop[:, :3] / np.maximum(backdrop[:, 3:], 1e-6),
            known,
        )


class BackdropKeyer:
    """Separates a product from a plain studio backdrop by colour, connectivity to the frame, and edges."""

    engine = "backdrop"

    def __init__(self, settings: BackdropKeyerSettings = BackdropKeyerSettings()) -> None:
        self.settings = settings

    def remove(self, image: Image.Image) -> BackgroundResult:
        """Mask for an 8-bit RGB/RGBA studio photo. Raises BackgroundRemovalError (no_backdrop, no_product_found)."""
        s = self.settings
        # 1. Check inputs; transparent pixels are background.
        if image.mode not in ("RGB", "RGBA"):
            raise ValueError(f"the backdrop keyer takes RGB or RGBA images, got mode {image.mode}")
        width, height = image.size
        pixels = image_array(image)
        rgb = np.ascontiguousarray(pixels[..., :3]) if image.mode == "RGBA" else pixels
        alpha = np.ascontiguousarray(pixels[..., 3]) if image.mode == "RGBA" else None

        # 2. Working copy: downscaled by area (which also averages away sensor noise), then lightly denoised.
        scale = min(1.0, s.working_long_side / max(width, height))
        work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        work_rgb = cv2.resize(rgb, work_size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        work_rgb = cv2.GaussianBlur(work_rgb.astype(np.float32), (0, 0), 1.0)
        lab = cv2.cvtColor(np.asarray(work_rgb / 255.0, dtype=np.float32), cv2.COLOR_RGB2Lab)
        if alpha is None:
            opaque = np.ones(lab.shape[:2], bool)
        else:
            small_alpha = cv2.resize(alpha, work_size, interpolation=cv2.INTER_AREA) if scale < 1 else alpha
            opaque = small_alpha >= _ALPHA_OPAQUE
        border = _border_band(lab.shape[:2], max(1, min(s.border_px, min(lab.shape[:2]) // 8)))

        # 3. Learn the backdrop from the border; a border that is mostly transparent needs no backdrop.
        if np.count_nonzero(border & opaque) < 0.05 * np.count_nonzero(border):
            assert alpha is not None  # an RGB image's border is opaque
            return self._from_transparency(opaque, alpha)
        coef, border_share = _fit_backdrop(lab, border & opaque, degree=2, tolerance=s.backdrop_tolerance_de)
        if border_share < s.min_backdrop_border_share:
            raise BackgroundRemovalError(
                "no_backdrop",
                f"the edges of the photo are not a plain studio backdrop (only {border_share:.0%} of the border "
                "matches one smooth colour), so the backdrop keyer cannot tell product from background; "
                "use --background rembg for photos like this",
            )

        # 4. Rough mask, then refit the backdrop on everything found to be backdrop (the border alone cannot see
        #    a vignette's centre) and key again. Only the box around the edges and what is not plain backdrop is
        #    keyed: outside it every pixel is plain backdrop, connected to the frame, so background (_keying_box).
        channels = _planes(lab)  # contiguous planes: numpy is several times slower on strided channels
        first_guess = _evaluate(coef, lab.shape[:2])
        distance = _delta_e(channels, first_guess)
        plain = distance < s.backdrop_tolerance_de
        plain_border = border & opaque & plain
        all_edges = self._edges(channels, plain_border)
        box = _keying_box((opaque & ~plain) | all_edges, margin=_KEYING_MARGIN_PX)
        inside, edges = [plane[box] for plane in channels], all_edges[box]
        background = self._background(
            inside, [plane[box] for plane in first_guess], distance[box], opaque[box], edges, rough=True
        )
        clear = plain & opaque
        clear[box] &= background
        if np.count_nonzero(clear) > 1000:
            coef, _ = _fit_backdrop(lab, clear, degree=3, tolerance=s.backdrop_tolerance_de)
        backdrop_lab = _evaluate(coef, lab.shape[:2], box)
        background = self._background(inside, backdrop_lab, _delta_e(inside, backdrop_lab), opaque[box], edges)

        # 5. Clean: drop specks and thin spurs, close pinholes, fill holes that do not reach the frame.
        product = np.zeros(lab.shape[:2], bool)
        product[box] = self._clean(~background)
        if np.count_nonzero(product) < s.min_product_share * product.size:
            raise BackgroundRemovalError(
                "no_product_found",
                "nothing stands out from the backdrop, so no product was found; "
                "check that the photo shows the product against a plain backdrop",
            )

        # 6. Local colours just inside and just outside the edge: for the full-size edge and for confidence.
        #    They are read only in the band around the edge, so only the band's box is filtered.
        product_u8 = product.astype(np.uint8) * 255
        band = cv2.dilate(product_u8, _disc(s.band_px)) != cv2.erode(product_u8, _disc(s.band_px))
        inner = _ring(product_u8, inside=True)
        outer = _ring(product_u8, inside=False) & opaque
        colours = _edge_colours(work_rgb, inner, outer, band)
        edge = (product_u8 > 0) & ~cv2.erode(product_u8, _disc(1)).astype(bool)
        contrast = _edge_contrast(colours, edge)

        # 7. Full-size mask: upsample, re-estimate the edge band from full-size pixels, feather.
        mask = self._full_size_mask(rgb, product_u8, band, colours, scale)
        if alpha is not None:
            mask[alpha < _ALPHA_OPAQUE] = 0

        # 8. Confidence from the contrast across the edge.
        confidence = float(min(1.0, contrast / s.full_confidence_de))
        low = contrast < s.low_confidence_de
        notes: tuple[str, ...] = ()
        if low:
            notes = (f"little contrast between product and backdrop at the edge (ΔE {contrast:.1f}): check the cutout",)
        r, g, b = (round(float(v)) for v in np.median(work_rgb[plain_border], axis=0))
        return BackgroundResult(
            mask=Image.fromarray(mask, "L"),
            engine=self.engine,
            confidence=round(confidence, 3),
            low_confidence=bool(low),
            backdrop_rgb=(r, g, b),
            notes=notes,
        )

    def _edges(self, channels: Sequence[np.ndarray], backdrop_sample: np.ndarray) -> np.ndarray:
        """Product edges: sharp colour steps clearly above the backdrop's own noise, gaps closed.

        `channels` are the working image's L*, a*, b* planes."""
        s = self.settings
        # A product's edge is a step; a soft shadow's is a ramp. A step's gradient fades when measured at a
        # coarser scale, a ramp's does not.
        fine = _colour_gradient(channels)
        coarse = _colour_gradient([cv2.GaussianBlur(plane, (0, 0), 2.0) for plane in channels])
        noise = float(np.percentile(fine[backdrop_sample], 90)) if backdrop_sample.any() else 0.0
        strong_step = max(s.edge_threshold_de_per_px, s.edge_noise_factor * noise)
        # Hysteresis, as in Canny: weaker steps count where they continue a strong one (a hem over its shadow).
        weak = (fine > 0.5 * strong_step) & (fine > s.edge_sharpness * coarse)
        # JPEG ringing and block noise are faint wiggles near a strong edge: too small a step to start an outline.
        weak &= fine >= s.ringing_ratio * cv2.dilate(fine, _disc(4))
        strong = weak & (fine > strong_step) & (_local_range(channels, radius=2) >= s.edge_min_step_de)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(weak.astype(np.uint8), connectivity=8)
        keep = np.zeros(count, bool)
        keep[labels[strong]] = True
        # Short fragments are JPEG ringing or dust, not a product's outline.
        keep &= stats[:, cv2.CC_STAT_AREA] >= s.min_edge_px
        keep[0] = False
        return cv2.dilate(keep[labels].astype(np.uint8), _disc(1)).astype(bool)

    def _background(
        self,
        lab: Sequence[np.ndarray],
        backdrop_lab: Sequence[np.ndarray],
        distance: np.ndarray,
        opaque: np.ndarray,
        edges: np.ndarray,
        rough: bool = False,
    ) -> np.ndarray:
        """Pixels like the backdrop (or a shadow on it), connected to the frame without crossing an edge.

        `lab` and `backdrop_lab` are L*, a*, b* planes; `distance` is the ΔE between them. `rough`: only the bulk
        of the backdrop, for refitting it: thin moats along the product are not won back.
        """
        s = self.settings
        lightness, red_green, yellow_blue = lab
        # A shadow only scales lightness: with L* ~ cube root, (L*+16) and a*, b* scale by the same factor.
        darkening = (lightness + 16.0) / (backdrop_lab[0] + 16.0)
        relit_a = red_green / darkening - backdrop_lab[1]
        relit_b = yellow_blue / darkening - backdrop_lab[2]
        shadow = (
            (darkening < 1.0)
            & (darkening >= 1.0 - s.shadow_max_darkening)
            & (np.sqrt(relit_a * relit_a + relit_b * relit_b) < s.shadow_chroma_tolerance_de)
        )
        like_backdrop = (distance < s.backdrop_tolerance_de) | shadow | ~opaque
        # Opening cuts passages a few px wide, so the fill cannot slip into a look-alike product where two of
        # its edges meet at a sharp corner (an armpit) and blur each other out.
        passable = cv2.morphologyEx((like_backdrop & ~edges).astype(np.uint8), cv2.MORPH_OPEN, _disc(2))
        background = _touching_border(passable)
        # The widened edges also cover a few plain backdrop pixels outside the product: win those back.
        # (Shadowed ones stay for the full-size edge estimate, which knows the local product colour.)
        plain = ((distance < s.backdrop_tolerance_de) | ~opaque).astype(np.uint8)
        for _ in range(3):
            background = (cv2.dilate(background.astype(np.uint8), _disc(1)) & plain).astype(bool) | background
        if rough:
            return background
        # Block noise around a strong edge can fence in a moat of pixels that are exactly the backdrop's colour.
        # Thin moats that touch the background go back to it; a thick region of that colour is product (a
        # white garment's lit front), so it stays.
        exact_colour = ((distance < s.exact_backdrop_de) & opaque).astype(np.uint8)
        exact = cv2.morphologyEx(exact_colour, cv2.MORPH_OPEN, _disc(2)).astype(bool) & ~background
        count, labels = cv2.connectedComponents(exact.astype(np.uint8), connectivity=4)
        if count > 1:
            thickness = np.zeros(count, np.float32)
            depth = cv2.distanceTransform(exact.astype(np.uint8), cv2.DIST_L2, 3)
            np.maximum.at(thickness, labels[exact], depth[exact])  # label 0 (not exact colour) is never read
            touching = np.zeros(count, bool)
            touching[labels[cv2.dilate(background.astype(np.uint8), _disc(1)).astype(bool) & exact]] = True
            moat = touching & (thickness <= s.max_moat_px)
            moat[0] = False
            if moat.any():  # a full-frame lookup, so only when there is a moat to add
                background |= moat[labels]
        return background

    def _clean(self, product: np.ndarray) -> np.ndarray:
        """Drop specks and thin spurs, close pinholes, fill holes that do not reach the frame."""
        mask: np.ndarray = product.astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disc(1))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disc(2))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count > 1:
            areas = stats[1:, cv2.CC_STAT_AREA]
            large = areas >= self.settings.min_component_share * areas.max()
            if not large.all():  # a full-frame lookup, so only when there are specks to drop
                kept = np.zeros(count, np.uint8)
                kept[np.flatnonzero(large) + 1] = 1
                mask = kept[labels]
        # Holes that do not reach the frame are inside the product (a print, a button, a fold's shadow).
        return ~_touching_border(mask == 0)

    def _full_size_mask(
        self,
        rgb: np.ndarray,
        product_u8: np.ndarray,
        band: np.ndarray,
        colours: _EdgeColours,
        scale: float,
    ) -> np.ndarray:
        """Upsampled rough mask whose edge `band` (working grid) is re-estimated per full-size pixel, then feathered."""
        s = self.settings
        height, width = rgb.shape[:2]
        if scale < 1:
            mask = cv2.resize(product_u8, (width, height), interpolation=cv2.INTER_LINEAR)
            band = cv2.resize(band.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        else:
            mask = product_u8.copy()
        flat_index = np.flatnonzero(band)
        ys, xs = np.divmod(flat_index, width)
        small_h, small_w = product_u8.shape
        # Where each full-size pixel falls on the working grid.
        small_ys = np.minimum(((ys + 0.5) * scale).astype(np.intp), small_h - 1)
        small_xs = np.minimum(((xs + 0.5) * scale).astype(np.intp), small_w - 1)
        # Each band pixel as a mix of the local product and backdrop colours (a one-pixel matting estimate);
        # a 3x3 mean keeps sensor noise out of it. Only the band's box is filtered: on a 24 MP photo the rest
        # of the frame is most of the work.
        if flat_index.size == 0:
            return cv2.GaussianBlur(mask, (0, 0), s.feather_px) if s.feather_px > 0 else mask
        top, bottom, left, right = _box_around(ys, xs, margin=1, shape=(height, width))
        colour = cv2.blur(rgb[top:bottom, left:right], (3, 3))[ys - top, xs - left].astype(np.float32)
        fore, back, known = colours.at(small_ys, small_xs)
        span = fore - back
        power = np.einsum("nc,nc->n", span, span)
        share = np.einsum("nc,nc->n", colour - back, span) / np.maximum(power, 1e-6)
        usable = (power > s.matting_min_contrast**2) & known
        mask.reshape(-1)[flat_index[usable]] = np.round(np.clip(share[usable], 0.0, 1.0) * 255).astype(np.uint8)
        if s.feather_px > 0:
            # Outside the band the mask is flat (0 or 255), which a blur leaves as it is: blur the band's box only.
            reach = math.ceil(4 * s.feather_px) + 1
            top, bottom, left, right = _box_around(ys, xs, margin=reach, shape=(height, width))
            mask[top:bottom, left:right] = cv2.GaussianBlur(mask[top:bottom, left:right], (0, 0), s.feather_px)
        return mask

    def _from_transparency(self, opaque: np.ndarray, alpha: np.ndarray) -> BackgroundResult:
        """An already cut-out image: the product is what is opaque."""
        product = self._clean(opaque)
        if np.count_nonzero(product) < self.settings.min_product_share * product.size:
            raise BackgroundRemovalError(
                "no_product_found", "the image is transparent all over, so no product was found"
            )
        mask = np.where(alpha >= _ALPHA_OPAQUE, alpha, 0).astype(np.uint8)
        return BackgroundResult(
            mask=Image.fromarray(mask, "L"),
            engine=self.engine,
            confidence=1.0,
            low_confidence=False,
            backdrop_rgb=None,
            notes=("the image was already cut out: its own transparency is the mask",),
        )


def _planes(image: np.ndarray) -> list[np.ndarray]:
    """An H x W x C image as C contiguous H x W planes, in one copy (twice as fast as cv2.split on float images)."""
    return list(np.ascontiguousarray(np.moveaxis(image, -1, 0)))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _border_band(shape: tuple[int, int], width: int) -> np.ndarray:
    band = np.zeros(shape, bool)
    band[:width, :] = band[-width:, :] = True
    band[:, :width] = band[:, -width:] = True
    return band


def _touching_border(region: np.ndarray) -> np.ndarray:
    """The parts of a region (boolean, or 0/1) that are connected (4-neighbourhood) to the frame's edge.

    One flood fill from a one-pixel ring of region laid around the frame: it reaches exactly the parts that touch the
    edge, and visits only them (labelling every part of the frame was 4x slower).
    """
    ringed = cv2.copyMakeBorder(region.astype(bool).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    cv2.floodFill(ringed, None, (0, 0), 2, flags=4)
    return ringed[1:-1, 1:-1] == 2


def _design(xs: np.ndarray, ys: np.ndarray, degree: int) -> np.ndarray:
    """Monomials x^i y^j (i + j <= degree) of coordinates normalised to [-1, 1], as the columns of a matrix.

    Powers come from running products: integer powers by `**` are far slower.
    """
    x_powers, y_powers = [np.ones_like(xs)], [np.ones_like(ys)]
    for _ in range(degree):
        x_powers.append(x_powers[-1] * xs)
        y_powers.append(y_powers[-1] * ys)
    terms = [(i, j) for total in range(degree + 1) for j in range(total + 1) for i in [total - j]]
    return np.stack([x_powers[i] * y_powers[j] for i, j in terms], 1)


def _fit_backdrop(lab: np.ndarray, sample: np.ndarray, degree: int, tolerance: float) -> tuple[np.ndarray, float]:
    """Robust polynomial fit of the backdrop's colour to the sampled pixels; returns coefficients, inlier share.

    Starts from the median colour (right whenever most samples are backdrop) and tightens the inlier cut-off,
    so a product that touches the border does not drag the fit.
    """
    height, width = lab.shape[:2]
    flat_index = np.flatnonzero(sample)
    flat_index = flat_index[:: max(1, len(flat_index) // 5_000)]
    ys, xs = np.divmod(flat_index, width)
    values = lab.reshape(-1, 3)[flat_index].astype(np.float64)
    design = _design(xs * (2.0 / max(width - 1, 1)) - 1, ys * (2.0 / max(height - 1, 1)) - 1, degree)
    coef = np.zeros((design.shape[1], 3))
    coef[0] = np.median(values, axis=0)
    for cut_off in (4 * tolerance, 2 * tolerance, tolerance, tolerance):
        inliers = _squared_residual(design, coef, values) < cut_off**2
        if np.count_nonzero(inliers) < design.shape[1] * 4:
            break
        # Normal equations: ten unknowns on coordinates in [-1, 1] are well conditioned, and solving them is far
        # cheaper than an SVD of the tall design matrix.
        kept = design[inliers]
        coef = np.linalg.solve(_matmul(kept, kept, transpose_first=True), _matmul(kept, values[inliers], True))
    return coef, float(np.mean(_squared_residual(design, coef, values) < tolerance**2))


def _squared_residual(design: np.ndarray, coef: np.ndarray, values: np.ndarray) -> np.ndarray:
    # OpenCV's matrix product, as everywhere in the keyer (see _matmul).
    residual = np.asarray(cv2.gemm(design, coef, 1.0, values, -1.0))
    return np.einsum("nc,nc->n", residual, residual)


def _evaluate(
    coef: np.ndarray, shape: tuple[int, int], box: tuple[slice, slice] = (slice(None), slice(None))
) -> list[np.ndarray]:
    """The fitted backdrop colour at every pixel of the frame's `box` (all of it by default), as L*, a*, b* planes:
    per channel, (powers of y) @ (per-column weights of each power of y).

    The polynomial is a sum of x^i y^j, so it is one small matrix product per channel rather than a full-size pass
    per term, and each product is already a contiguous plane.
    """
    height, width = shape
    degree = round((math.sqrt(8 * coef.shape[0] + 1) - 3) / 2)
    rows, columns_kept = box
    powers = np.arange(degree + 1, dtype=np.float32)
    x_powers = np.linspace(-1, 1, width, dtype=np.float32)[columns_kept, np.newaxis] ** powers
    y_powers = np.linspace(-1, 1, height, dtype=np.float32)[rows, np.newaxis] ** powers
    grid = np.zeros((degree + 1, degree + 1, 3), np.float32)  # [j, i] holds the weights of x^i y^j
    terms = [(i, j) for total in range(degree + 1) for j in range(total + 1) for i in [total - j]]
    for (i, j), weights in zip(terms, coef.astype(np.float32), strict=True):
        grid[j, i] = weights
    columns = np.einsum("jic,wi->cjw", grid, x_powers)  # per channel: [j, w] the weight of y^j at column w
    return [_matmul(y_powers, np.ascontiguousarray(columns[channel])) for channel in range(3)]


def _keying_box(keyed: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows and columns of the box around the `keyed` pixels (edges and what is not plain backdrop) grown by
    `margin`. Outside it every pixel is plain backdrop (or transparent) with no edge between it and the frame's edge,
    so background whatever is inside; the box's own edge is such backdrop too.

    The filters that key the box reach less than `margin`, so inside it they give what they would give on the whole
    frame, and what connects to the frame connects to the box's edge: the same mask. A box of most of the frame is
    the whole frame.
    """
    height, width = keyed.shape
    top, bottom, left, right = _mask_box(keyed, margin)
    if not keyed.any() or (bottom - top) * (right - left) > _KEYING_BOX_MAX_SHARE * height * width:
        return slice(0, height), slice(0, width)
    return slice(top, bottom), slice(left, right)


def _matmul(first: np.ndarray, second: np.ndarray, transpose_first: bool = False) -> np.ndarray:
    """first @ second (or first.T @ second) by OpenCV, whose results the keyer's masks were checked against.

    OpenCV runs it on its own OpenBLAS, whose idle threads spin beside the caller: where photos are prepared it is held
    to one thread (functions/blas_threads.py)."""
    flags = cv2.GEMM_1_T if transpose_first else 0
    return np.asarray(cv2.gemm(first, second, 1.0, np.empty((0, 0), first.dtype), 0.0, flags=flags))


def _box_around(ys: np.ndarray, xs: np.ndarray, margin: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """top, bottom, left, right (exclusive) of the points' bounding box grown by `margin`, inside the frame."""
    height, width = shape
    return (
        max(0, int(ys.min()) - margin),
        min(height, int(ys.max()) + margin + 1),
        max(0, int(xs.min()) - margin),
        min(width, int(xs.max()) + margin + 1),
    )


def _mask_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """top, bottom, left, right (exclusive) of a boolean mask's bounding box grown by `margin`, inside the frame
    (`_box_around` for a mask, without listing its pixels)."""
    height, width = mask.shape
    left, top, box_w, box_h = cv2.boundingRect(mask.view(np.uint8))
    return (
        max(0, top - margin),
        min(height, top + box_h + margin),
        max(0, left - margin),
        min(width, left + box_w + margin),
    )


def _delta_e(lab: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> np.ndarray:
    """CIE76 ΔE between two images given as L*, a*, b* planes."""
    squared = np.zeros(lab[0].shape, np.float32)
    for mine, theirs in zip(lab, other, strict=True):
        cv2.accumulateSquare(cv2.subtract(mine, theirs), squared)  # squared += difference², with no temporary
    return np.sqrt(squared)


def _colour_gradient(lab: Sequence[np.ndarray]) -> np.ndarray:
    """Gradient magnitude of a CIELAB image (given as L*, a*, b* planes), in ΔE per pixel."""
    squared = np.zeros(lab[0].shape, np.float32)
    for plane in lab:
        for dx, dy in ((1, 0), (0, 1)):
            cv2.accumulateSquare(cv2.Sobel(plane, cv2.CV_32F, dx, dy, ksize=3), squared)
    return np.sqrt(squared) / 8.0


def _local_range(lab: Sequence[np.ndarray], radius: int) -> np.ndarray:
    """Spread of colours (ΔE between per-channel max and min) in a disc around each pixel; L*, a*, b* planes."""
    squared = np.zeros(lab[0].shape, np.float32)
    disc = _disc(radius)
    for plane in lab:
        cv2.accumulateSquare(cv2.subtract(cv2.dilate(plane, disc), cv2.erode(plane, disc)), squared)
    return np.sqrt(squared)


def _ring(mask: np.ndarray, inside: bool) -> np.ndarray:
    """A ring 3-7 px inside (or outside) the mask's edge: clear of the edge's own mixed pixels."""
    if inside:
        return cv2.erode(mask, _disc(3)).astype(bool) & ~cv2.erode(mask, _disc(7)).astype(bool)
    return cv2.dilate(mask, _disc(7)).astype(bool) & ~cv2.dilate(mask, _disc(3)).astype(bool)


def _edge_colours(
    image: np.ndarray, inner: np.ndarray, outer: np.ndarray, band: np.ndarray, sigma: float = 6.0
) -> _EdgeColours:
    """Gaussian-weighted colours of `image` over the `inner` and the `outer` ring, in the box around the `band`.

    Only that box, grown by the kernel's reach, is filtered: each value there comes from the same pixels as a
    whole-frame blur's (a downscaled photo's full-size edge also reads working pixels next to the band).
    """
    # OpenCV's kernel for float images spans 4 sigma each side (cv2.getGaussianKernel's default size).
    top, bottom, left, right = _mask_box(band, margin=round(4 * sigma) + 1)
    box = (slice(top, bottom), slice(left, right))
    # RGB -> RGBA fills the fourth channel with 1: colour x weight and the weight as one four-channel image.
    rgba = cv2.cvtColor(image[box], cv2.COLOR_RGB2RGBA)
    return _EdgeColours(
        top=top,
        left=left,
        product_sums=_weighted_sums(rgba, inner[box], sigma),
        backdrop_sums=_weighted_sums(rgba, outer[box], sigma),
    )


def _weighted_sums(rgba: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted sums of colour x `where` and of `where` (RGB + weight) around each pixel.

    Filtered at half resolution: they are smooth at this sigma, and the masks made from them stayed within IoU 0.998
    of a full-resolution filter's, at an eighth of its cost.
    """
    height, width = where.shape
    # `where` is 0 or 1: the colour (and weight 1) where it holds, and 0 elsewhere.
    planes = np.zeros((height, width, 4), np.float32)
    cv2.copyTo(rgba, where.view(np.uint8), planes)
    if min(height, width) < 8 * sigma:
        return cv2.GaussianBlur(planes, (0, 0), sigma)
    half = cv2.resize(planes, ((width + 1) // 2, (height + 1) // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(half, (0, 0), sigma / 2), (width, height), interpolation=cv2.INTER_LINEAR)


def _edge_contrast(colours: _EdgeColours, edge: np.ndarray) -> float:
    """ΔE between the colours just inside and just outside the edge; the low quartile, as weak spots matter."""
    inside, outside, known = colours.at(*np.nonzero(edge))
    if not known.any():
        return 0.0
    inside_lab = cv2.cvtColor(inside[known][np.newaxis] / 255.0, cv2.COLOR_RGB2Lab)[0]
    outside_lab = cv2.cvtColor(outside[known][np.newaxis] / 255.0, cv2.COLOR_RGB2Lab)[0]
    return float(np.percentile(np.linalg.norm(inside_lab - outside_lab, axis=1), 25))
