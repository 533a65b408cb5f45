"""Lifestyle scenes with a brand's look: the product placed on a canvas, the scene painted around it.

Modes (`params["mode"]`):
- `"inpaint"` (default): `inputs.cutout` (RGBA PNG, alpha = product mask) or `inputs.image` + `inputs.mask`
  (white = product). The product is placed by layout rules, SDXL inpaints everything around it (a thin
  band at its edge may be repainted for contact and shadow), optionally guided by a ControlNet (canny
  or depth from the product), and the product's own pixels are composited back on top.
  Invariant: inside `keep_mask.png` every output pixel equals `placed.png` (the product as placed),
  and `placed.png` holds the cutout's own pixels inside `placement_box` (resampled only when
  `details["scale"] != 1`).
- `"img2img"`: `inputs.image` (or the cutout flattened on white) regenerated with `request.strength`.
- `"text2img"`: the prompt alone.

Parameters (all optional): `brand_profile` (a BrandProfile object; or `inputs.brand_profile`, a URI of
its JSON), `product` ({title, colour, collection}), `scene` (a scene preset name), `prompt` (overrides
the template), `negative_prompt`, `width`/`height`, `steps`, `guidance_scale`, `layout`
({anchor: "bottom"|"center", fill: 0..1 or null for the native size, margin: 0..0.4}), `edge_band_px`,
`controlnet` ("canny"|"depth"), `controlnet_scale`.

    request = JobRequest(job_id="job-0001", kind="lifestyle", brand="acme", sku="sku-1",
                         inputs={"cutout": "file:///data/sku-1/cutout.png"},
                         output_prefix="file:///data/out/sku-1/lifestyle", variations=2, seed=7,
                         params={"brand_profile": profile.model_dump(mode="json"), "scene": "terrace"})
    result = run(request, registry)
"""

import json
import re
import string
import time
from datetime import UTC, datetime
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image
from pydantic import ValidationError

from schemas import BrandProfile, JobOutput, JobRequest, JobResult, Status
from schemas.records import Box

from .. import storage
from ..errors import JobInputError
from ..models import ModelRegistry
from ..params import choice_param, float_param, int_param, variation_seeds
from ..tiny_models import TINY_NOTE

Mode = Literal["inpaint", "img2img", "text2img"]

DEFAULT_TEMPLATE = "a lifestyle photo of {title}, {colour}, professional fashion photography"
DEFAULT_NEGATIVE = "blurry, deformed, low quality, watermark, text, extra limbs"
TEMPLATE_FIELDS = frozenset({"title", "colour", "collection", "category", "brand"})
PRODUCT_ALPHA_THRESHOLD = 128  # alpha at or above this is product, below is background
BACKGROUND_FILL = 127  # what the canvas holds around the product before inpainting (mid grey)
FEATHER_SIGMA_PX = 1.5  # softness of the seam between the kept product and the painted band


def run(request: JobRequest, registry: ModelRegistry) -> JobResult:
    timings: dict[str, float] = {}
    started = time.perf_counter()

    # 1. check inputs
    params = request.params
    mode: Mode = choice_param(params, "mode", "inpaint", ("inpaint", "img2img", "text2img"))
    profile = _brand_profile(request)
    width = int_param(params, "width", registry.config.default_size, 64, 2048)
    height = int_param(params, "height", registry.config.default_size, 64, 2048)
    for name, value in (("width", width), ("height", height)):
        if value % 8:
            raise JobInputError(f"params.{name}", f"must be a multiple of 8, got {value}")
    steps = int_param(params, "steps", registry.config.default_steps, 1, 150)
    guidance = float_param(params, "guidance_scale", 5.0, 0.0, 30.0)
    edge_band = int_param(params, "edge_band_px", max(1, round(min(width, height) / 256)), 0, 64)
    controlnet = params.get("controlnet")
    if controlnet is not None and (mode == "text2img" or controlnet not in ("canny", "depth")):
        raise JobInputError("params.controlnet", "must be 'canny' or 'depth', and needs a product (not text2img)")
    controlnet_scale = float_param(params, "controlnet_scale", 0.5, 0.0, 2.0)
    seeds = variation_seeds(request)

    # 2. licences and brand adapters (the base is never reloaded; LoRAs are switched by weight)
    brand_commercial = profile.commercial if profile is not None else False
    registry.check_licence(registry.config.base, brand_commercial=brand_commercial)
    if controlnet is not None and controlnet in registry.config.controlnets:
        registry.check_licence(registry.config.controlnets[controlnet], brand_commercial=brand_commercial)
    adapter_versions = registry.use_adapters(profile.adapters if profile is not None else ())
    prompt, negative_prompt = _prompts(request, profile)
    prompt = registry.with_embedding_tokens(prompt)  # the trigger word -> its pivotal-tuning tokens, when loaded
    timings["prepare"] = time.perf_counter() - started

    # 3. place the product on the canvas (inpaint) or prepare the init image (img2img)
    step_started = time.perf_counter()
    placement: _Placement | None = None
    call: dict[str, Any] = {}
    if mode == "inpaint":
        placement = _place_product(_read_product(request), width, height, params.get("layout") or {}, edge_band)
        call["image"] = Image.fromarray(placement.canvas_rgb)
        call["mask_image"] = Image.fromarray(np.where(placement.keep, 0, 255).astype(np.uint8))
        call["strength"] = request.strength if request.strength is not None else 0.99
    elif mode == "img2img":
        call["image"] = _read_init_image(request).resize((width, height), Image.Resampling.LANCZOS)
        call["strength"] = request.strength if request.strength is not None else 0.6

    # 4. optional ControlNet image from the product: canny edges, or a depth stand-in
    control_image: Image.Image | None = None
    if controlnet is not None:
        source = placement.canvas_rgb if placement is not None else np.asarray(call["image"].convert("RGB"))
        mask = placement.product if placement is not None else np.ones(source.shape[:2], dtype=bool)
        control_image = _control_image(controlnet, source, mask)
        call["control_image"] = control_image
        call["controlnet_conditioning_scale"] = controlnet_scale
    timings["place"] = time.perf_counter() - step_started

    # 5. generate the variations one by one, so that a recorded seed regenerates its image on its own
    #    (batching variations changes the noise each one gets); CFG is still batched inside each call.
    step_started = time.perf_counter()
    task: Literal["text2img", "img2img", "inpaint"] = mode
    pipe: Any = registry.pipeline(task, controlnet=controlnet)
    images: list[Image.Image] = []
    for seed in seeds:
        images += pipe(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=registry.generator(seed),
            callback_on_step_end=registry.step_callback,
            **call,
        ).images
    timings["generate"] = time.perf_counter() - step_started

    # 6. re-composite the product's own pixels over each generated scene
    step_started = time.perf_counter()
    if placement is not None:
        images = [_composite(placement, np.asarray(image.convert("RGB"))) for image in images]

    # 7. write the outputs and what is needed to check the invariant
    shared: dict[str, Any] = {
        "mode": mode,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "size": [width, height],
        "steps": steps,
        "guidance_scale": guidance,
        "strength": call.get("strength"),
        "controlnet": controlnet,
    }
    if registry.is_tiny:
        shared["note"] = TINY_NOTE
    if placement is not None:
        shared.update(
            placement_box=placement.box.model_dump(),
            scale=placement.scale,
            edge_band_px=edge_band,
            keep_mask_uri=storage.write_png(
                storage.join(request.output_prefix, "keep_mask.png"),
                Image.fromarray(placement.keep.astype(np.uint8) * 255),
            ),
            placed_uri=storage.write_png(
                storage.join(request.output_prefix, "placed.png"), Image.fromarray(placement.canvas_rgba)
            ),
            invariant="inside keep_mask (255) every output pixel equals placed.png's RGB",
        )
    if control_image is not None:
        shared["control_image_uri"] = storage.write_png(
            storage.join(request.output_prefix, f"control_{controlnet}.png"), control_image
        )
    outputs = [
        JobOutput(
            uri=storage.write_png(storage.join(request.output_prefix, f"lifestyle_{index}.png"), image),
            seed=seed,
            details=shared,
        )
        for index, (image, seed) in enumerate(zip(images, seeds, strict=True))
    ]
    timings["write"] = time.perf_counter() - step_started
    return JobResult(
        job_id=request.job_id,
        kind=request.kind,
        status=Status.SUCCEEDED,
        outputs=tuple(outputs),
        model_version=registry.model_version,
        adapter_versions=adapter_versions,
        timings_s={key: round(value, 4) for key, value in timings.items()},
        finished_at=datetime.now(UTC),
    )


# ---- brand profile and prompts ------------------------------------------------------------------------
def _brand_profile(request: JobRequest) -> BrandProfile | None:
    """From `params.brand_profile` (an object) or `inputs.brand_profile` (a URI of its JSON); None when absent."""
    if "brand_profile" in request.params:
        raw, field = request.params["brand_profile"], "params.brand_profile"
    elif "brand_profile" in request.inputs:
        field = "inputs.brand_profile"
        try:
            data = storage.read_bytes(request.inputs["brand_profile"])
        except (OSError, storage.StorageError) as error:
            raise JobInputError(field, f"cannot read the brand profile JSON: {error}") from error
        try:
            raw = json.loads(data)
        except ValueError as error:  # never the file's text in the message
            where = f" (line {error.lineno}, column {error.colno})" if isinstance(error, json.JSONDecodeError) else ""
            raise JobInputError(field, f"the brand profile is not JSON{where}") from error
    else:
        return None
    try:
        return BrandProfile.model_validate(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False, include_context=False)[0]
        location = ".".join(str(part) for part in first["loc"])
        raise JobInputError(f"{field}.{location}" if location else field, first["msg"]) from error


def _prompts(request: JobRequest, profile: BrandProfile | None) -> tuple[str, str]:
    """Prompt = trigger token + template (collection, then category, then 'default') + scene preset."""
    params = request.params
    product = params.get("product") or {}
    if not isinstance(product, dict):
        raise JobInputError("params.product", "must be an object with title, colour, collection")
    values = {
        "title": str(product.get("title") or request.sku),
        "colour": str(product.get("colour") or ""),
        "collection": str(product.get("collection") or ""),
        "category": request.category.value,
        "brand": request.brand,
    }
    templates = profile.prompt_templates if profile is not None else {}
    key = next((k for k in (values["collection"], values["category"], "default") if k and k in templates), None)
    if isinstance(params.get("prompt"), str):
        prompt = params["prompt"]
    else:
        template = templates[key] if key is not None else DEFAULT_TEMPLATE
        prompt = _fill_template(template, values, f"brand_profile.prompt_templates.{key}")
    negative = (profile.negative_prompt if profile is not None else None) or DEFAULT_NEGATIVE
    scene_name = params.get("scene")
    if scene_name is not None:
        scenes = {scene.name: scene for scene in (profile.scene_presets if profile is not None else ())}
        if scene_name not in scenes:
            raise JobInputError("params.scene", f"unknown scene preset {scene_name!r}; known: {sorted(scenes)}")
        prompt = f"{prompt}, {scenes[scene_name].prompt}"
        negative = scenes[scene_name].negative_prompt or negative
    if profile is not None and profile.trigger_token:
        prompt = f"{profile.trigger_token}, {prompt}"
    if isinstance(params.get("negative_prompt"), str):
        negative = params["negative_prompt"]
    # An empty placeholder ("{colour}" with no colour) leaves ", ,": drop the empty item.
    prompt = re.sub(r"\s*,(\s*,)+", ",", " ".join(prompt.split())).strip(" ,")
    return prompt, negative


def _fill_template(template: str, values: dict[str, str], field: str) -> str:
    # Only plain known names: `{title.__class__}` or `{0}` in a brand-supplied template is refused.
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in TEMPLATE_FIELDS:
            raise JobInputError(field, f"unknown placeholder {{{name}}}; use {sorted(TEMPLATE_FIELDS)}")
    return template.format_map(values)


# ---- inputs ---------------------------------------------------------------------------------------------
def _read_image(request: JobRequest, name: str) -> Image.Image:
    try:
        return storage.read_image(request.inputs[name])
    except (OSError, ValueError, storage.StorageError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise JobInputError(f"inputs.{name}", f"cannot read the image: {error}") from error


def _read_product(request: JobRequest) -> Image.Image:
    """The product as RGBA: the cutout, or the image with the mask as alpha."""
    if "cutout" in request.inputs:
        cutout = _read_image(request, "cutout")
        if cutout.mode not in ("RGBA", "LA", "PA") and "transparency" not in cutout.info:
            raise JobInputError("inputs.cutout", f"must have an alpha channel (the product mask), got {cutout.mode}")
        return cutout.convert("RGBA")
    if "image" in request.inputs and "mask" in request.inputs:
        image, mask = _read_image(request, "image").convert("RGB"), _read_image(request, "mask").convert("L")
        if image.size != mask.size:
            raise JobInputError("inputs.mask", f"is {mask.size}, the image is {image.size}: they must match")
        image.putalpha(mask)
        return image
    raise JobInputError("inputs.cutout", "the lifestyle recipe needs inputs.cutout, or inputs.image and inputs.mask")


def _read_init_image(request: JobRequest) -> Image.Image:
    if "image" in request.inputs:
        return _read_image(request, "image").convert("RGB")
    if "cutout" in request.inputs:
        cutout = _read_image(request, "cutout").convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", cutout.size, (255, 255, 255, 255)), cutout).convert("RGB")
    raise JobInputError("inputs.image", "img2img needs inputs.image (or inputs.cutout)")


# ---- layout, control image, composite --------------------------------------------------------------------
class _Placement:
    """The product on the canvas: pixels, masks, and where it went."""

    def __init__(self, canvas_rgba: np.ndarray, box: Box, scale: float, edge_band: int) -> None:
        self.canvas_rgba = canvas_rgba
        self.box = box
        self.scale = scale
        alpha = canvas_rgba[..., 3]
        self.product = alpha >= PRODUCT_ALPHA_THRESHOLD
        if edge_band > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge_band + 1, 2 * edge_band + 1))
            self.keep = cv2.erode(self.product.astype(np.uint8), kernel, borderValue=0).astype(bool)
        else:
            self.keep = self.product.copy()
        self.canvas_rgb = np.where(self.product[..., None], canvas_rgba[..., :3], np.uint8(BACKGROUND_FILL))


def _place_product(product: Image.Image, width: int, height: int, layout: Any, edge_band: int) -> _Placement:
    """Crop to the product, scale it so its larger side fills `fill` of the canvas, anchor it, record the box."""
    if not isinstance(layout, dict):
        raise JobInputError("params.layout", "must be an object: {anchor, fill, margin}")
    anchor = layout.get("anchor", "bottom")
    if anchor not in ("bottom", "center"):
        raise JobInputError("params.layout.anchor", f"must be 'bottom' or 'center', got {anchor!r}")
    margin = float_param(layout, "margin", 0.06, 0.0, 0.4, prefix="params.layout")
    fill = layout.get("fill", 0.6)
    alpha = np.asarray(product.getchannel("A"))
    if not (alpha >= PRODUCT_ALPHA_THRESHOLD).any():
        raise JobInputError("inputs.cutout", "the product mask is empty (no pixel with alpha >= 128)")
    # The crop keeps the faint edge pixels around the product too, so the seam is not cut hard.
    visible_rows, visible_cols = np.nonzero(alpha)
    crop = product.crop(
        (int(visible_cols.min()), int(visible_rows.min()), int(visible_cols.max()) + 1, int(visible_rows.max()) + 1)
    )
    room_w, room_h = width * (1 - 2 * margin), height * (1 - 2 * margin)
    fits = min(room_w / crop.width, room_h / crop.height)
    if fill is None:
        if fits < 1:
            raise JobInputError("params.layout.fill", f"the product ({crop.size}) does not fit at native size")
        scale = 1.0
    else:
        if not isinstance(fill, int | float) or not 0.05 <= fill <= 1.0:
            raise JobInputError("params.layout.fill", f"must be a number from 0.05 to 1, or null, got {fill!r}")
        scale = min(fill * min(width / crop.width, height / crop.height), fits)
    if scale != 1.0:
        size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
        crop = crop.resize(size, Image.Resampling.LANCZOS)  # Pillow premultiplies alpha when resizing RGBA
    left = (width - crop.width) // 2
    top = height - round(margin * height) - crop.height if anchor == "bottom" else (height - crop.height) // 2
    canvas = np.zeros((height, width, 4), dtype=np.uint8)
    canvas[top : top + crop.height, left : left + crop.width] = np.asarray(crop)
    box = Box(left=left, top=top, right=left + crop.width, bottom=top + crop.height)
    return _Placement(canvas, box, scale, edge_band)


def _control_image(kind: str, rgb: np.ndarray, product: np.ndarray) -> Image.Image:
    if kind == "canny":
        edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 100, 200)
        # The silhouette is the strongest cue for the scene's perspective: add it to the texture edges.
        outline = cv2.morphologyEx(product.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        edges = np.maximum(edges, outline * 255)
        return Image.fromarray(np.repeat(edges[..., None], 3, axis=2))
    # Depth stand-in, used while no depth estimator is configured: the product as a rounded bulge (distance
    # to its silhouette, normalised) in front of a flat far background. It tells a depth ControlNet where
    # the object stands, not its real relief.
    distance = cv2.distanceTransform(product.astype(np.uint8), cv2.DIST_L2, 5)
    peak = float(distance.max()) or 1.0
    depth = np.where(product, 128 + 127 * np.sqrt(distance / peak), 0).astype(np.uint8)
    return Image.fromarray(np.repeat(depth[..., None], 3, axis=2))


def _composite(placement: _Placement, generated: np.ndarray) -> Image.Image:
    """Product pixels exactly inside `keep`; outside it, a feathered blend that never reaches past the product."""
    if generated.shape[:2] != placement.keep.shape:
        raise RuntimeError(f"the pipeline returned {generated.shape[:2]}, expected {placement.keep.shape}")
    feather = cv2.GaussianBlur(placement.keep.astype(np.float32), (0, 0), FEATHER_SIGMA_PX)
    weight = np.minimum(feather, placement.canvas_rgba[..., 3].astype(np.float32) / 255.0)
    weight[placement.keep] = 1.0
    product = placement.canvas_rgba[..., :3].astype(np.float32)
    blended = weight[..., None] * product + (1.0 - weight[..., None]) * generated.astype(np.float32)
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[placement.keep] = placement.canvas_rgba[..., :3][placement.keep]  # exact, not merely rounded back
    return Image.fromarray(out)


# ---- parameters ----------------------------------------------------------------------------------------
