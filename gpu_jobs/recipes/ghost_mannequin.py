"""Ghost mannequin: a garment photographed on a mannequin -> the garment alone, as if worn by no one.

    result = run(request, registry)   # kind "ghost_mannequin"

Inputs: `inputs["image"]` (the garment on a mannequin, on a plain backdrop), optional `inputs["back"]` (the inside
of the garment's back, shot separately). Params: `background` ("white" | "transparent", default white),
`mirror_back` (flip the back shot left-right first), `prompt`/`negative_prompt`, `steps`, `guidance_scale`.
`request.strength` (img2img strength): without a back shot it is the inpainting strength (default 1.0); with one,
the back-shot fill is refined by inpainting at that strength (no refinement when unset).

Steps: the clothes segmenter finds the garment; the backdrop key finds the foreground; the mannequin is the
foreground minus the garment. The mannequin outside the garment's silhouette (neck above the collar, the stand)
becomes background; the mannequin the garment encloses (seen through the neckline and armholes) is the *filled
region*, filled from the aligned back shot or else by SDXL inpainting of that region only.

Invariant (checkable from the outputs): outside the filled region every output pixel is either the input pixel
(garment) or exactly the background value (white (255,255,255) or transparent (0,0,0,0)). Each output's
`details` names the filled-region mask and garment mask PNGs written next to it.
"""

import time
from datetime import UTC, datetime
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from schemas import JobOutput, JobRequest, JobResult
from schemas.records import Status

from .. import storage
from ..errors import JobInputError
from ..models import ModelRegistry
from ..params import bool_param, choice_param, float_param, int_param, variation_seeds
from ..segmentation import backdrop_foreground, load_clothes_segmenter
from ..tiny_models import TINY_NOTE

_DEFAULT_PROMPT = "the inside back of a garment, fabric lining and neck tape, clean studio product photo"
_DEFAULT_NEGATIVE = "mannequin, person, skin, body, neck, shadow, text"
_CONTEXT_MARGIN = 0.5  # the inpainting crop extends this share of the filled region's size around it
_PASTE_GROW_PX = 3  # the mask given to the pipeline is grown a little: latent masks are coarse at the edge


Background = Literal["white", "transparent"]
_WHITE = (255, 255, 255)
_TRANSPARENT = (0, 0, 0, 0)
_ALIGN_LONG_SIDE = 512  # garment masks are aligned at this size; the affine is scaled back up
_MIN_COMPONENT_SHARE = 0.01  # garment/mannequin pieces smaller than this share of the largest are specks


def _keep_large_components(mask: np.ndarray, min_share: float = _MIN_COMPONENT_SHARE) -> np.ndarray:
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_share * areas.max()) + 1
    return np.isin(components, keep)


def split_garment_and_mannequin(garment_raw: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Garment mask (as segmented, specks dropped) and mannequin mask (the rest of the foreground)."""
    garment = _keep_large_components(garment_raw)
    mannequin = foreground & ~garment
    # A one-pixel fringe of mannequin along the garment's edge is anti-aliasing, not body: open it away.
    opened = cv2.morphologyEx(mannequin.view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return garment, _keep_large_components(opened.astype(bool))


def neck_fill_region(garment: np.ndarray, mannequin: np.ndarray) -> np.ndarray:
    """The part of the mannequin the garment encloses: what shows through the neckline and armholes.

    Enclosed = inside the garment's convex hull. The neck above the shoulder line and the stand below the hem lie
    outside the hull (they become background); the mannequin seen through a scooped neckline or an armhole lies
    inside it and has to be filled with the garment's inside.
    """
    points = cv2.findNonZero(garment.view(np.uint8))
    if points is None:
        return np.zeros_like(garment)
    hull = np.zeros(garment.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return mannequin & hull.astype(bool)


def align_back_to_front(
    back_rgb: np.ndarray, back_garment: np.ndarray, front_garment: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the inside-back shot onto the front shot's frame by aligning the two garment silhouettes.

    A similarity from the masks' moments (centroid and area) starts OpenCV's ECC, which refines it to an affine on
    blurred masks at a working size; if ECC does not converge the moment estimate stands. Returns the warped
    back image and the warped back garment mask, both in the front's size.
    """
    height, width = front_garment.shape
    scale = min(1.0, _ALIGN_LONG_SIDE / max(width, height, *back_garment.shape))

    def small(mask: np.ndarray) -> np.ndarray:
        size = (max(8, round(mask.shape[1] * scale)), max(8, round(mask.shape[0] * scale)))
        resized = cv2.resize(mask.view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(resized.astype(np.float32) / 255.0, (0, 0), 2.0)

    front_small, back_small = small(front_garment), small(back_garment)
    front_moments = cv2.moments(front_small)
    back_moments = cv2.moments(back_small)
    zoom = float(np.sqrt(front_moments["m00"] / back_moments["m00"]))
    front_centre = np.array([front_moments["m10"], front_moments["m01"]]) / front_moments["m00"]
    back_centre = np.array([back_moments["m10"], back_moments["m01"]]) / back_moments["m00"]
    # Maps back (working) coordinates to front (working) coordinates.
    warp = np.array([[zoom, 0.0, 0.0], [0.0, zoom, 0.0]], np.float32)
    warp[:, 2] = front_centre - zoom * back_centre
    # ECC wants both images the same size: pre-warp the back by the moment estimate, then refine from identity.
    pre = cv2.warpAffine(back_small, warp, front_small.shape[::-1], flags=cv2.INTER_LINEAR)
    refine = np.eye(2, 3, dtype=np.float32)
    try:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
        _, found = cv2.findTransformECC(front_small, pre, refine, cv2.MOTION_AFFINE, criteria)
        refine = np.asarray(found, np.float32)
        # findTransformECC returns the map front -> pre-warped back; compose: back -> pre -> front.
        inverse = cv2.invertAffineTransform(refine)
        warp = _compose_affine(inverse, warp)
    except cv2.error:
        pass  # no convergence: the moment-based similarity is a fair alignment for the same garment
    # Scale the working-size affine up to full size: full = S · work, so A_full = S A S⁻¹ (translation scaled).
    back_scale = np.array([back_small.shape[1] / back_garment.shape[1], back_small.shape[0] / back_garment.shape[0]])
    front_scale = np.array([front_small.shape[1] / width, front_small.shape[0] / height])
    full = np.zeros((2, 3), np.float64)
    full[:, :2] = warp[:, :2] * back_scale[None, :] / front_scale[:, None]
    full[:, 2] = warp[:, 2] / front_scale
    warped_rgb = cv2.warpAffine(
        back_rgb, full, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    warped_mask = cv2.warpAffine(back_garment.view(np.uint8), full, (width, height), flags=cv2.INTER_NEAREST)
    return warped_rgb, warped_mask.astype(bool)


def _compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer ∘ inner for 2x3 affines."""
    a = np.vstack([outer, [0, 0, 1]]).astype(np.float64)
    b = np.vstack([inner, [0, 0, 1]]).astype(np.float64)
    return (a @ b)[:2].astype(np.float32)


def fill_from_back(
    canvas_rgb: np.ndarray, fill: np.ndarray, warped_back: np.ndarray, warped_back_garment: np.ndarray
) -> tuple[np.ndarray, float]:
    """`canvas_rgb` with the fill region taken from the aligned back shot; returns it and the share covered.

    Fill pixels the aligned back garment does not cover are continued from their surroundings (OpenCV's Telea
    inpainting) rather than left as mannequin.
    """
    out = canvas_rgb.copy()
    covered = fill & warped_back_garment
    out[covered] = warped_back[covered]
    uncovered = fill & ~warped_back_garment
    if uncovered.any():
        out = cv2.inpaint(out, uncovered.view(np.uint8), 3, cv2.INPAINT_TELEA)
    share = float(covered.sum()) / max(1, int(fill.sum()))
    return out, share


def compose_ghost(
    image_rgb: np.ndarray, garment: np.ndarray, fill: np.ndarray, fill_rgb: np.ndarray, background: Background
) -> Image.Image:
    """The ghost-mannequin image: garment pixels as photographed, the fill region from `fill_rgb`, the rest background.

    Masks are hard so the invariant holds exactly: outside `fill` a pixel is the input pixel or the background value.
    """
    visible = garment | fill
    if background == "white":
        out = np.full(image_rgb.shape, _WHITE, np.uint8)
        out[garment] = image_rgb[garment]
        out[fill] = fill_rgb[fill]
        return Image.fromarray(out, "RGB")
    out = np.zeros((*image_rgb.shape[:2], 4), np.uint8)  # == _TRANSPARENT everywhere
    out[garment, :3] = image_rgb[garment]
    out[fill, :3] = fill_rgb[fill]
    out[visible, 3] = 255
    return Image.fromarray(out, "RGBA")


def run(request: JobRequest, registry: ModelRegistry) -> JobResult:
    """Run one ghost-mannequin job; outputs go under `request.output_prefix`."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. Check inputs.
    if "image" not in request.inputs:
        raise JobInputError("inputs.image", "the ghost mannequin recipe needs the garment-on-mannequin photo")
    params = request.params
    background: Background = choice_param(params, "background", "white", ("white", "transparent"))
    mirror_back = bool_param(params, "mirror_back", False)
    steps = int_param(params, "steps", registry.config.default_steps, 1, 150)
    guidance = float_param(params, "guidance_scale", 5.0, 0.0, 30.0)

    # 2. Load the photos (8-bit RGB; a transparent input's background becomes the backdrop white).
    image_rgb = _read_rgb(request.inputs["image"], "inputs.image")
    back_rgb = _read_rgb(request.inputs["back"], "inputs.back") if "back" in request.inputs else None
    if back_rgb is not None and mirror_back:
        back_rgb = np.ascontiguousarray(back_rgb[:, ::-1])

    # 3. Segment: garment (clothes segmenter), foreground (backdrop key), mannequin = foreground minus garment.
    clock = time.perf_counter()
    device: Literal["cpu", "cuda"] = "cuda" if registry.device.type == "cuda" else "cpu"
    segmenter = registry.cached("segmenter:clothes", lambda: load_clothes_segmenter(registry.config, device))
    image = Image.fromarray(image_rgb)
    foreground = backdrop_foreground(image)
    garment, mannequin = split_garment_and_mannequin(segmenter.garment_mask(image), foreground)
    garment_source = "segmenter"
    if garment.sum() < 0.001 * garment.size:
        garment, mannequin, garment_source = _tiny_models_fallback(request, registry, foreground)
    fill = neck_fill_region(garment, mannequin)
    timings["segment"] = time.perf_counter() - clock

    # 4. Fill the enclosed region: from the aligned back shot, else (or to refine it) by inpainting only there.
    clock = time.perf_counter()
    canvas = np.where(garment[..., None], image_rgb, np.uint8(255))
    details: dict[str, Any] = {
        "background": background,
        "filled_share": float(fill.mean()),
        "garment_mask_source": garment_source,
    }
    if back_rgb is not None and fill.any():
        back_garment = segmenter.garment_mask(Image.fromarray(back_rgb))
        if back_garment.sum() < 0.001 * back_garment.size:
            raise JobInputError("inputs.back", "no garment found in the back shot")
        warped, warped_garment = align_back_to_front(back_rgb, _keep_large_components(back_garment), garment)
        canvas, covered = fill_from_back(canvas, fill, warped, warped_garment)
        details.update(fill_source="back", back_coverage=round(covered, 4))
    elif fill.any():
        # Start from the surroundings continued inwards: strength < 1 keeps that start rather than the mannequin.
        canvas = cv2.inpaint(canvas, fill.view(np.uint8), 3, cv2.INPAINT_TELEA)
        details["fill_source"] = "inpaint"
    else:
        details["fill_source"] = "none"  # nothing of the mannequin shows through the garment
    diffuse = fill.any() and (back_rgb is None or request.strength is not None)
    timings["align"] = time.perf_counter() - clock

    # 5. Diffuse the filled region, one image per variation (a deterministic back-shot fill makes one).
    clock = time.perf_counter()
    fills: list[tuple[np.ndarray, int | None]] = []
    if diffuse:
        registry.use_adapters(())  # brand LoRAs are for scenes, not for a garment's inside
        seeds = variation_seeds(request)
        for variation_seed in seeds:
            painted = _inpaint_region(
                registry,
                canvas,
                fill,
                prompt=str(params.get("prompt", _DEFAULT_PROMPT)),
                negative_prompt=str(params.get("negative_prompt", _DEFAULT_NEGATIVE)),
                strength=request.strength if request.strength is not None else 1.0,
                steps=steps,
                guidance=guidance,
                seed=variation_seed,
            )
            fills.append((painted, variation_seed))
    else:
        fills.append((canvas, None))
        if request.variations > 1:
            details["variations_note"] = "the back-shot fill is deterministic: one image, not one per variation"
    timings["fill"] = time.perf_counter() - clock

    # 6. Compose on the background and write each output with the masks that check it.
    clock = time.perf_counter()
    fill_uri = storage.write_png(storage.join(request.output_prefix, "ghost_mannequin_fill_mask.png"), _mask_png(fill))
    garment_uri = storage.write_png(
        storage.join(request.output_prefix, "ghost_mannequin_garment_mask.png"), _mask_png(garment)
    )
    outputs = []
    for index, (fill_rgb, seed) in enumerate(fills):
        result_image = compose_ghost(image_rgb, garment, fill, fill_rgb, background)
        uri = storage.write_png(storage.join(request.output_prefix, f"ghost_mannequin_{index}.png"), result_image)
        output_details = {
            **details,
            "input_uri": request.inputs["image"],
            "fill_mask_uri": fill_uri,
            "garment_mask_uri": garment_uri,
            "background_value": list(_WHITE if background == "white" else _TRANSPARENT),
        }
        if registry.is_tiny and seed is not None:
            output_details["note"] = TINY_NOTE
        outputs.append(JobOutput(uri=uri, seed=seed, details=output_details))
    timings["write"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - started
    return JobResult(
        job_id=request.job_id,
        kind=request.kind,
        status=Status.SUCCEEDED,
        outputs=tuple(outputs),
        model_version=registry.model_version if diffuse else None,
        timings_s={key: round(value, 4) for key, value in timings.items()},
        finished_at=datetime.now(UTC),
    )


def _inpaint_region(
    registry: ModelRegistry,
    canvas: np.ndarray,
    region: np.ndarray,
    *,
    prompt: str,
    negative_prompt: str,
    strength: float,
    steps: int,
    guidance: float,
    seed: int,
) -> np.ndarray:
    """`canvas` with `region` repainted by SDXL inpainting of a crop around it; pixels outside `region` untouched.

    Only a crop around the region (plus context) goes through the pipeline, at the configured working size, so a
    24 MP photo costs what a 1024 px one does.
    """
    height, width = region.shape
    ys, xs = np.nonzero(region)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    margin_y = max(8, round((bottom - top) * _CONTEXT_MARGIN))
    margin_x = max(8, round((right - left) * _CONTEXT_MARGIN))
    top, bottom = max(0, top - margin_y), min(height, bottom + margin_y)
    left, right = max(0, left - margin_x), min(width, right + margin_x)
    crop_w, crop_h = right - left, bottom - top
    scale = registry.config.default_size / max(crop_w, crop_h)
    work_w, work_h = (max(32, round(side * scale / 32) * 32) for side in (crop_w, crop_h))
    crop = Image.fromarray(canvas[top:bottom, left:right]).resize((work_w, work_h), Image.Resampling.LANCZOS)
    grown = cv2.dilate(
        region[top:bottom, left:right].view(np.uint8), np.ones((3, 3), np.uint8), iterations=_PASTE_GROW_PX
    )
    mask = Image.fromarray(grown * np.uint8(255)).resize((work_w, work_h), Image.Resampling.NEAREST)
    pipe: Any = registry.pipeline("inpaint")
    painted = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        image=crop,
        mask_image=mask,
        height=work_h,
        width=work_w,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=registry.generator(seed),
        callback_on_step_end=registry.step_callback,
    ).images[0]
    painted_rgb = np.asarray(painted.convert("RGB").resize((crop_w, crop_h), Image.Resampling.LANCZOS))
    out = canvas.copy()
    window = out[top:bottom, left:right]
    inside = region[top:bottom, left:right]
    window[inside] = painted_rgb[inside]
    return out


def _read_rgb(uri: str, field: str) -> np.ndarray:
    try:
        image = storage.read_image(uri)
    except (FileNotFoundError, storage.StorageError, OSError) as error:
        raise JobInputError(field, f"cannot read the image: {error}") from error
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        image = flat
    return np.asarray(image.convert("RGB"))


_TINY_FALLBACK = "cutout_mask (tiny models: their random clothes segmenter found no garment)"


def _tiny_models_fallback(
    request: JobRequest, registry: ModelRegistry, foreground: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """No garment segmented. With real weights that is the answer; with `--models tiny` (whose random segmenter
    only sees saturated colours: a white tee or a grey hoodie is not garment to it) the garment is the cutout mask
    prepare made (`inputs["mask"]`), so a newcomer still sees the recipe's output, and `details` says so."""
    if not registry.is_tiny:
        raise JobInputError("inputs.image", "no garment found in the photo (the clothes segmenter found none)")
    cutout = np.zeros_like(foreground)
    if "mask" in request.inputs:
        try:
            mask = storage.read_image(request.inputs["mask"]).convert("L")
        except (FileNotFoundError, storage.StorageError, OSError) as error:
            raise JobInputError("inputs.mask", f"cannot read the cutout mask: {error}") from error
        if mask.size != (foreground.shape[1], foreground.shape[0]):
            mask = mask.resize((foreground.shape[1], foreground.shape[0]), Image.Resampling.NEAREST)
        cutout = np.asarray(mask) > 127
    if cutout.sum() < 0.001 * cutout.size:
        raise JobInputError(
            "inputs.image",
            "no garment found in the photo: the models are tiny random ones (--models tiny), whose clothes "
            "segmenter finds only saturated colours, and there was no cutout mask to fall back to; real weights "
            "(--models CONFIG.json) segment real garments",
        )
    garment, mannequin = split_garment_and_mannequin(cutout, foreground)
    return garment, mannequin, _TINY_FALLBACK


def _mask_png(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * np.uint8(255), "L")
