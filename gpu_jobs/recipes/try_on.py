"""Virtual try-on: a garment image + photos of the brand's models -> each model wearing the garment.

    result = run(request, registry)   # kind "try_on"

Inputs: `inputs["garment"]` (a cutout RGBA PNG or a photo), optional `inputs["model"]` (one model photo); without
it the photos come from the brand profile's `model_library` (those whose `body_regions` allow the category), else
from the default library (`gpu_jobs.model_library`, drawn figures, written next to the outputs). Optional
`inputs["control"]`: a pose/depth control image for `params["controlnet"]`. Params: `engine` ("diffusers" |
"catvton", default from the config), `model_ids` (pick library photos), `mask_limbs` (let sleeves/legs change),
`controlnet` ("pose" | "depth" | "canny"), `ip_adapter_scale`, `prompt`, `negative_prompt`, `steps`,
`guidance_scale`. `request.strength` < 1 starts from the model photo (img2img-style inpainting); default 1.0.

Steps: human parsing labels the model photo; the agnostic mask is the clothing of the category's region (upper for
tops/outerwear, lower for bottoms, full for dresses), dilated, minus the face, hair and shoes; an engine inpaints
that mask conditioned on the garment; the engine's pixels are pasted back inside the mask only.

Invariant (checkable from the outputs): outside the agnostic mask the output equals the model photo exactly.
Each output's `details` names the agnostic mask PNG and the model photo's URI.
"""

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import torch
from PIL import Image
from pydantic import ValidationError

from schemas import BrandProfile, GarmentCategory, JobOutput, JobRequest, JobResult, ModelPhoto
from schemas.records import Status

from .. import storage
from ..config import IPAdapterSpec, ModelSpec
from ..errors import JobInputError
from ..model_library import DEFAULT_MODEL_IDS, draw_default_model
from ..models import ModelRegistry
from ..params import bool_param, choice_param, float_param, int_param, variation_seeds
from ..segmentation import REGION_FOR_CATEGORY, load_human_parser
from ..tiny_models import TINY_NOTE

_DEFAULT_PROMPT = "a fashion model wearing the garment, studio catalog photo, natural fabric folds"
_DEFAULT_NEGATIVE = "deformed, extra limbs, text, watermark, blurry"
_CONTEXT_MARGIN = 0.15  # the inpainting crop extends this share of the mask's size around it
_DEFAULT_LIBRARY_SIZE = (768, 1024)


# ---- the engine interface -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TryOnTask:
    """One generation: everything at the engine's working size."""

    person: Image.Image  # RGB crop of the model photo
    mask: Image.Image  # L, 255 = repaint
    garment: Image.Image  # RGB garment on white
    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    strength: float
    seed: int
    control_image: Image.Image | None = None


class TryOnEngine(Protocol):
    """Makes the person wear the garment inside the mask. The recipe pastes only the masked pixels back."""

    name: str
    version: str

    def generate(self, task: TryOnTask) -> Image.Image: ...


class DiffusersTryOnEngine:
    """SDXL inpainting conditioned on the garment through an IP-Adapter (+ an optional ControlNet); diffusers only.

    The IP-Adapter is read once (real `load_ip_adapter`) and kept aside; for each generation it is attached to the
    shared UNet and detached afterwards (`_ip_adapter_attached`). Why not a dedicated pipeline with its own UNet:
    that is a second SDXL UNet in GPU memory (~5 GB in half precision). Attaching is safe because the worker runs
    one job at a time, and detaching puts back the very processor objects the UNet had (including the registry's
    fused ones), so lifestyle and ghost mannequin see the UNet exactly as before a try-on job.
    """

    name = "diffusers"

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        brand_commercial: bool,
        controlnet: str | None = None,
        ip_adapter_scale: float | None = None,
    ) -> None:
        spec = registry.config.ip_adapter
        if spec is None:
            raise JobInputError("params.engine", "the diffusers try-on engine needs `ip_adapter` in the model config")
        registry.check_licence(spec, brand_commercial=brand_commercial)
        if spec.image_encoder is not None:
            registry.check_licence(spec.image_encoder, brand_commercial=brand_commercial)
        self.registry = registry
        self.controlnet = controlnet
        self.scale = spec.scale if ip_adapter_scale is None else ip_adapter_scale
        self.kit = registry.cached("try_on:ip_adapter", lambda: _load_ip_adapter(registry, spec))
        self.version = f"{registry.model_version}+ip-adapter:{spec.name}"

    def generate(self, task: TryOnTask) -> Image.Image:
        pipe: Any = self.registry.pipeline("inpaint", controlnet=self.controlnet)
        extra: dict[str, Any] = {}
        if self.controlnet is not None:
            if task.control_image is None:
                raise JobInputError("inputs.control", f"the {self.controlnet} ControlNet needs a control image")
            extra["control_image"] = task.control_image
        with _ip_adapter_attached(pipe, self.kit):
            pipe.set_ip_adapter_scale(self.scale)
            return pipe(
                prompt=task.prompt,
                negative_prompt=task.negative_prompt,
                image=task.person,
                mask_image=task.mask,
                ip_adapter_image=task.garment,
                height=task.person.height,
                width=task.person.width,
                strength=task.strength,
                num_inference_steps=task.steps,
                guidance_scale=task.guidance_scale,
                generator=self.registry.generator(task.seed),
                callback_on_step_end=self.registry.step_callback,
                **extra,
            ).images[0]


@dataclass
class _IPAdapterKit:
    """An IP-Adapter loaded once: its attention processors, image projection and image encoder."""

    processors: dict[str, Any]
    projection: torch.nn.Module
    image_encoder: torch.nn.Module
    feature_extractor: Any


def _load_ip_adapter(registry: ModelRegistry, spec: IPAdapterSpec) -> _IPAdapterKit:
    """Load through diffusers' `load_ip_adapter` once, keep the parts, and leave the UNet as it was."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0
    from transformers import CLIPVisionModelWithProjection

    pipe: Any = registry.pipeline("inpaint")
    source, subfolder, weight_name = spec.source, spec.subfolder or "", spec.weight_name
    encoder_spec: ModelSpec | None = spec.image_encoder
    if spec.is_tiny:
        folder = write_tiny_ip_adapter(Path(tempfile.mkdtemp(prefix="tiny-ip-adapter-")), pipe.unet)
        source, subfolder, weight_name = str(folder), "", _TINY_IP_WEIGHTS
        encoder_source, encoder_subfolder = str(folder), "image_encoder"
    elif encoder_spec is None:
        raise JobInputError("params.engine", f"IP-Adapter '{spec.name}' needs `image_encoder` in the model config")
    else:
        encoder_source, encoder_subfolder = encoder_spec.source, encoder_spec.subfolder or ""
    if weight_name is None:
        raise JobInputError("params.engine", f"IP-Adapter '{spec.name}' needs `weight_name` in the model config")
    local_only = not registry.config.allow_downloads
    encoder: Any = CLIPVisionModelWithProjection.from_pretrained(
        encoder_source, subfolder=encoder_subfolder or None, local_files_only=local_only
    )
    encoder.to(registry.device, registry.dtype)
    unet = pipe.unet
    before = dict(unet.attn_processors)
    proj_before, type_before = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    pipe.register_modules(image_encoder=encoder, feature_extractor=None)
    try:
        pipe.load_ip_adapter(
            source, subfolder=subfolder, weight_name=weight_name, image_encoder_folder=None, local_files_only=local_only
        )
        kit = _IPAdapterKit(
            processors={
                name: processor
                for name, processor in unet.attn_processors.items()
                if isinstance(processor, IPAdapterAttnProcessor | IPAdapterAttnProcessor2_0)
            },
            projection=unet.encoder_hid_proj,
            image_encoder=encoder,
            feature_extractor=pipe.feature_extractor,
        )
    finally:
        _restore_unet(pipe, before, proj_before, type_before)
    return kit


@contextmanager
def _ip_adapter_attached(pipe: Any, kit: _IPAdapterKit) -> Iterator[None]:
    """Attach the IP-Adapter to the (shared) UNet for the duration of the block, then put everything back."""
    unet = pipe.unet
    before = dict(unet.attn_processors)
    proj_before, type_before = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    unet.set_attn_processor({name: kit.processors.get(name, processor) for name, processor in before.items()})
    # The same two assignments diffusers' own loader makes (`_load_ip_adapter_weights`); undone below.
    unet.encoder_hid_proj = kit.projection
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    pipe.register_modules(image_encoder=kit.image_encoder, feature_extractor=kit.feature_extractor)
    try:
        yield
    finally:
        _restore_unet(pipe, before, proj_before, type_before)


def _restore_unet(pipe: Any, processors: dict[str, Any], projection: Any, hid_type: Any) -> None:
    pipe.unet.set_attn_processor(processors)
    pipe.unet.encoder_hid_proj = projection
    pipe.unet.config.encoder_hid_dim_type = hid_type
    pipe.register_modules(image_encoder=None, feature_extractor=None)


_TINY_IP_WEIGHTS = "ip-adapter_tiny.safetensors"


def write_tiny_ip_adapter(folder: Path, unet: Any, *, seed: int = 0, image_embed_dim: int = 32) -> Path:
    """Write a tiny random IP-Adapter for `unet` in the layout `load_ip_adapter` reads, plus its image encoder.

    `folder/ip-adapter_tiny.safetensors` holds `image_proj.*` (an `ImageProjection`: 4 tokens of the UNet's
    cross-attention width from a `image_embed_dim` CLIP embedding) and `ip_adapter.{k}.to_k_ip/to_v_ip.weight`
    for every cross-attention layer (k = 1, 3, 5, ... in `attn_processors` order, as diffusers numbers them);
    `folder/image_encoder` is a tiny `CLIPVisionModelWithProjection` with that projection size.
    """
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cross_dim = unet.config.cross_attention_dim
    blocks = unet.config.block_out_channels
    state: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=37,
                projection_dim=image_embed_dim,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
            )
        )
        state["image_proj.proj.weight"] = torch.randn(4 * cross_dim, image_embed_dim) * 0.1
        state["image_proj.proj.bias"] = torch.zeros(4 * cross_dim)
        state["image_proj.norm.weight"] = torch.ones(cross_dim)
        state["image_proj.norm.bias"] = torch.zeros(cross_dim)
        key_id = 1
        for name in unet.attn_processors:
            if name.endswith("attn1.processor"):
                continue
            if name.startswith("mid_block"):
                hidden = blocks[-1]
            elif name.startswith("up_blocks"):
                hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
            else:
                hidden = blocks[int(name[len("down_blocks.")])]
            # Random, not zero, so that the garment image visibly changes the result in tests.
            state[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross_dim) * 0.2
            state[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross_dim) * 0.2
            key_id += 2
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / _TINY_IP_WEIGHTS))
    encoder.save_pretrained(str(folder / "image_encoder"))
    return folder


class CatVTONEngine:
    """CatVTON (mask-based try-on by concatenating person and garment latents; SD 1.5 inpainting base).

    Its weights are CC BY-NC-SA 4.0: refused by the licence gate when the deployment or the brand is commercial.
    `spec.source` is a local folder holding `base/` (a Stable Diffusion 1.5 inpainting pipeline in diffusers
    layout: unet, vae, scheduler) and `attention/model.safetensors` (CatVTON's self-attention weights, e.g. from
    its `mix-48k-1024` folder; `spec.subfolder` names that folder when the layout keeps it).
    """

    name = "catvton"

    def __init__(self, registry: ModelRegistry, spec: ModelSpec | None, *, brand_commercial: bool) -> None:
        if spec is None:
            raise JobInputError("params.engine", "the catvton engine needs `catvton` in the model config")
        registry.check_licence(spec, brand_commercial=brand_commercial)  # LicenceError: reported as licence_refused
        self.registry = registry
        self.version = f"catvton:{spec.name}@{spec.revision or 'local'}"
        self.parts = registry.cached(f"try_on:catvton:{spec.source}", lambda: _load_catvton(registry, spec))

    def generate(self, task: TryOnTask) -> Image.Image:
        # Adapted from CatVTON's `CatVTONPipeline.__call__` (concatenation on the height axis, CFG by dropping the
        # garment); the weights' layout is theirs, so the loop follows theirs.
        unet, vae, scheduler = self.parts
        device, dtype = self.registry.device, self.registry.dtype
        width, height = task.person.size

        def to_tensor(image: Image.Image) -> torch.Tensor:
            array = np.asarray(image.convert("RGB").resize((width, height)), np.float32) / 127.5 - 1.0
            return torch.from_numpy(array).permute(2, 0, 1)[None].to(device, dtype)

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor

        person, garment = to_tensor(task.person), to_tensor(task.garment)
        mask = torch.from_numpy(np.asarray(task.mask, np.float32) / 255.0)[None, None].to(device, dtype)
        generator = self.registry.generator(task.seed)
        with torch.inference_mode():
            masked_latent = encode(person * (mask < 0.5))
            garment_latent = encode(garment)
            mask_latent = torch.nn.functional.interpolate(mask, size=masked_latent.shape[-2:], mode="nearest")
            condition = torch.cat([masked_latent, garment_latent], dim=-2)
            mask_condition = torch.cat([mask_latent, torch.zeros_like(mask_latent)], dim=-2)
            cfg = task.guidance_scale > 1.0
            if cfg:
                unconditional = torch.cat([masked_latent, torch.zeros_like(garment_latent)], dim=-2)
                condition = torch.cat([unconditional, condition])
                mask_condition = torch.cat([mask_condition] * 2)
            scheduler.set_timesteps(task.steps, device=device)
            noise = torch.randn(condition[:1].shape, generator=generator, dtype=torch.float32).to(device, dtype)
            latents = noise * scheduler.init_noise_sigma
            for timestep in scheduler.timesteps:
                model_input = torch.cat([latents] * 2) if cfg else latents
                model_input = scheduler.scale_model_input(model_input, timestep)
                model_input = torch.cat([model_input, mask_condition, condition], dim=1)
                noise_pred = unet(model_input, timestep, encoder_hidden_states=None, return_dict=False)[0]
                if cfg:
                    unconditional_pred, conditional_pred = noise_pred.chunk(2)
                    noise_pred = unconditional_pred + task.guidance_scale * (conditional_pred - unconditional_pred)
                latents = scheduler.step(noise_pred, timestep, latents).prev_sample
                self.registry.check_deadline()
            person_latents = latents.split(latents.shape[-2] // 2, dim=-2)[0]
            decoded = vae.decode(person_latents / vae.config.scaling_factor).sample
        pixels = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(pixels, "RGB")


class _SkipCrossAttention:
    """CatVTON has no text: its cross-attention layers pass hidden states through unchanged."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


def _load_catvton(registry: ModelRegistry, spec: ModelSpec) -> tuple[Any, Any, Any]:
    from accelerate import load_checkpoint_in_model
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    folder = Path(spec.source)
    attention = folder / (spec.subfolder or "") / "attention" / "model.safetensors"
    base = folder / "base"
    missing = [str(path) for path in (base / "unet", base / "vae", attention) if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"CatVTON weights for '{spec.name}' not found: missing {', '.join(missing)}. Put an SD 1.5 inpainting "
            f"pipeline under {base} and CatVTON's attention/model.safetensors under {attention.parent.parent}."
        )
    unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet")
    vae = AutoencoderKL.from_pretrained(str(base), subfolder="vae")
    scheduler = DDIMScheduler.from_pretrained(str(base), subfolder="scheduler")
    unet.set_attn_processor(
        {
            name: (processor if name.endswith("attn1.processor") else _SkipCrossAttention())
            for name, processor in unet.attn_processors.items()
        }
    )
    # CatVTON saves its trained self-attention as a ModuleList of every module whose name contains "attn1", in
    # `named_modules` order (their `get_trainable_module(unet, "attention")`); load it the same way.
    attention_modules = torch.nn.ModuleList([module for name, module in unet.named_modules() if "attn1" in name])
    load_checkpoint_in_model(attention_modules, str(attention.parent))
    unet.to(registry.device, registry.dtype).eval()
    vae.to(registry.device, registry.dtype).eval()
    return unet, vae, scheduler


# ---- the recipe ---------------------------------------------------------------------------------------------------
def run(request: JobRequest, registry: ModelRegistry) -> JobResult:
    """Run one try-on job; outputs go under `request.output_prefix`."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. Check inputs.
    if "garment" not in request.inputs:
        raise JobInputError("inputs.garment", "the try-on recipe needs a garment image (cutout or photo)")
    category, category_details = _decide_category(request, registry)
    region = REGION_FOR_CATEGORY[category]
    params = request.params
    engine_name = choice_param(params, "engine", registry.config.try_on_engine, ("diffusers", "catvton"))
    controlnet = params.get("controlnet")
    if controlnet not in (None, "pose", "depth", "canny"):
        raise JobInputError("params.controlnet", f"must be 'pose', 'depth' or 'canny', got {controlnet!r}")
    mask_limbs = bool_param(params, "mask_limbs", False)
    steps = int_param(params, "steps", registry.config.default_steps, 1, 150)
    guidance = float_param(params, "guidance_scale", 5.0, 0.0, 30.0)
    ip_scale = float_param(params, "ip_adapter_scale", -1.0, -1.0, 2.0)
    brand = _brand_profile(request)

    # 2. Load the garment and pick the model photos.
    garment = _garment_on_white(_read_image(request.inputs["garment"], "inputs.garment"))
    photos = _model_photos(request, brand, category, region)
    control = (
        _read_image(request.inputs["control"], "inputs.control").convert("RGB") if "control" in request.inputs else None
    )

    # 3. Build the engine (licence gate first: a refused engine loads nothing).
    clock = time.perf_counter()
    brand_commercial = brand.commercial if brand is not None else False
    engine: TryOnEngine
    if engine_name == "catvton":
        if controlnet is not None:
            raise JobInputError("params.controlnet", "the catvton engine takes no ControlNet")
        engine = CatVTONEngine(registry, registry.config.catvton, brand_commercial=brand_commercial)
    else:
        registry.use_adapters(())  # brand LoRAs are scene styles; try-on must show the garment as it is
        engine = DiffusersTryOnEngine(
            registry,
            brand_commercial=brand_commercial,
            controlnet=controlnet,
            ip_adapter_scale=None if ip_scale < 0 else ip_scale,
        )
    device: Literal["cpu", "cuda"] = "cuda" if registry.device.type == "cuda" else "cpu"
    parser = registry.cached("segmenter:human_parsing", lambda: load_human_parser(registry.config, device))
    timings["load"] = time.perf_counter() - clock

    # 4. For each model photo: agnostic mask from human parsing, then one generation per variation.
    outputs: list[JobOutput] = []
    seeds = variation_seeds(request)
    timings["parse"] = timings["generate"] = 0.0
    for photo_index, (model_id, model_uri, person) in enumerate(photos):
        clock = time.perf_counter()
        person_rgb = np.asarray(person)
        agnostic = parser.agnostic_mask(parser.parse(person), region, mask_limbs=mask_limbs)
        if agnostic.sum() < 0.001 * agnostic.size:
            raise JobInputError("inputs.model", f"model photo '{model_id}': no {region}-body clothing found to replace")
        mask_uri = storage.write_png(
            storage.join(request.output_prefix, f"try_on_{photo_index}_agnostic_mask.png"),
            Image.fromarray(agnostic.astype(np.uint8) * np.uint8(255), "L"),
        )
        timings["parse"] += time.perf_counter() - clock
        clock = time.perf_counter()
        window = _crop_window(agnostic)
        work_size = _working_size(window, registry.config.default_size)
        crop = _crop(person_rgb, window, work_size, Image.Resampling.LANCZOS)
        mask_crop = _crop(agnostic.astype(np.uint8) * np.uint8(255), window, work_size, Image.Resampling.NEAREST)
        control_crop = None
        if controlnet is not None:
            control_crop = _control_image(controlnet, control, person_rgb, agnostic, window, work_size)
        for variation, seed in enumerate(seeds):
            generated = engine.generate(
                TryOnTask(
                    person=crop,
                    mask=mask_crop,
                    garment=garment,
                    prompt=str(params.get("prompt", _DEFAULT_PROMPT)),
                    negative_prompt=str(params.get("negative_prompt", _DEFAULT_NEGATIVE)),
                    steps=steps,
                    guidance_scale=guidance,
                    strength=request.strength if request.strength is not None else 1.0,
                    seed=seed,
                    control_image=control_crop,
                )
            )
            # 5. Paste the engine's pixels back inside the agnostic mask only, and write.
            result_rgb = _paste(person_rgb, agnostic, generated, window)
            uri = storage.write_png(
                storage.join(request.output_prefix, f"try_on_{photo_index}_{variation}.png"),
                Image.fromarray(result_rgb, "RGB"),
            )
            details: dict[str, Any] = {
                "model_id": model_id,
                "model_uri": model_uri,
                "agnostic_mask_uri": mask_uri,
                "region": region,
                "engine": engine.name,
                "engine_version": engine.version,
                "mask_limbs": mask_limbs,
                "controlnet": controlnet,
                "prompt": str(params.get("prompt", _DEFAULT_PROMPT)),  # with the seed: what the learning loop needs
                **category_details,
            }
            if registry.is_tiny:
                details["note"] = TINY_NOTE
            outputs.append(JobOutput(uri=uri, seed=seed, details=details))
        timings["generate"] += time.perf_counter() - clock
    timings["total"] = time.perf_counter() - started
    return JobResult(
        job_id=request.job_id,
        kind=request.kind,
        status=Status.SUCCEEDED,
        outputs=tuple(outputs),
        model_version=engine.version,
        timings_s={key: round(value, 4) for key, value in timings.items()},
        finished_at=datetime.now(UTC),
    )


def _brand_profile(request: JobRequest) -> BrandProfile | None:
    """The brand profile from `params["brand_profile"]` (an object) or `inputs["brand_profile"]` (a JSON file).

    Errors name fields, never values: a profile read from a URI may be any file.
    """
    if "brand_profile" in request.params:
        raw, field = request.params["brand_profile"], "params.brand_profile"
    elif "brand_profile" in request.inputs:
        field = "inputs.brand_profile"
        try:
            data = storage.read_bytes(request.inputs["brand_profile"])
        except (OSError, storage.StorageError) as error:
            raise JobInputError(field, f"cannot read the brand profile: {error}") from error
        try:
            raw = json.loads(data)
        except ValueError as error:
            raise JobInputError(field, "not a valid brand profile: not JSON") from error
    else:
        return None
    try:
        return BrandProfile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False, include_context=False)
        )
        raise JobInputError(field, f"not a valid brand profile: {problems}") from error


def _decide_category(request: JobRequest, registry: ModelRegistry) -> tuple[GarmentCategory, dict[str, Any]]:
    """The category to dress (and details saying where it came from): the request's when try-on covers it; for
    `other`, the configured garment classifier's top class when it is confident and covered; else a refusal."""
    if request.category in REGION_FOR_CATEGORY:
        return request.category, {}
    known = sorted(category.value for category in REGION_FOR_CATEGORY)
    how_to_fix = (
        f"try-on covers {', '.join(known)}; got '{request.category.value}'. Add \"category\" to the SKU's "
        "product.json or pass --category tops|bottoms|dresses|outerwear to `catalog run`"
    )
    if request.category != GarmentCategory.OTHER or registry.config.garment_classifier is None:
        raise JobInputError("category", how_to_fix)
    brand = _brand_profile(request)
    classifier = registry.garment_classifier(brand_commercial=brand.commercial if brand is not None else False)
    assert classifier is not None
    guess = classifier.classify(_read_image(request.inputs["garment"], "inputs.garment"))
    if guess.confidence < classifier.spec.min_confidence:
        raise JobInputError("category", f"{how_to_fix} (the garment classifier was unsure: {guess.describe()})")
    if guess.category not in REGION_FOR_CATEGORY:
        raise JobInputError(
            "category", f"{how_to_fix} (the garment classifier says {guess.describe()}, which try-on does not cover)"
        )
    return guess.category, {
        "category": guess.category.value,
        "category_source": "classifier",
        "category_confidence": round(guess.confidence, 4),
    }


def _model_photos(
    request: JobRequest, brand: BrandProfile | None, category: GarmentCategory, region: str
) -> list[tuple[str, str, Image.Image]]:
    """(model id, URI, RGB image) for each photo to dress."""
    if "model" in request.inputs:
        uri = request.inputs["model"]
        return [("input", uri, _read_image(uri, "inputs.model").convert("RGB"))]
    wanted = request.params.get("model_ids")
    if wanted is not None and (not isinstance(wanted, list) or not all(isinstance(item, str) for item in wanted)):
        raise JobInputError("params.model_ids", "must be a list of model ids")
    library: list[ModelPhoto] = [
        photo
        for photo in (brand.model_library if brand is not None else ())
        if not photo.body_regions or category in photo.body_regions
    ]
    if library:
        chosen = [photo for photo in library if wanted is None or photo.model_id in wanted]
        if not chosen:
            raise JobInputError("params.model_ids", f"none of {wanted} is in the brand's library for {region} try-on")
        return [
            (
                photo.model_id,
                photo.uri,
                _read_image(photo.uri, f"brand_profile.model_library.{photo.model_id}").convert("RGB"),
            )
            for photo in chosen
        ]
    # The default library: drawn figures, written next to the outputs so the invariant can be checked from them.
    ids = [model_id for model_id in DEFAULT_MODEL_IDS if wanted is None or model_id in wanted]
    if not ids:
        raise JobInputError("params.model_ids", f"the default library has {list(DEFAULT_MODEL_IDS)}, got {wanted}")
    size = _default_library_size(request)
    photos = []
    for model_id in ids:
        image = draw_default_model(model_id, size)
        uri = storage.write_png(storage.join(request.output_prefix, f"default_model_{model_id}.png"), image)
        photos.append((model_id, uri, image))
    return photos


def _default_library_size(request: JobRequest) -> tuple[int, int]:
    size = request.params.get("default_model_size", list(_DEFAULT_LIBRARY_SIZE))
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(side, int) and 32 <= side <= 4096 for side in size)
    ):
        raise JobInputError("params.default_model_size", f"must be [width, height] from 32 to 4096, got {size!r}")
    return int(size[0]), int(size[1])


def _read_image(uri: str, field: str) -> Image.Image:
    try:
        return storage.read_image(uri)
    except (FileNotFoundError, storage.StorageError, OSError) as error:
        raise JobInputError(field, f"cannot read the image: {error}") from error


def _garment_on_white(image: Image.Image) -> Image.Image:
    """A cutout's transparent background becomes white, as IP-Adapter/CatVTON garment images are shot."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
        flat.alpha_composite(image.convert("RGBA"))
        return flat.convert("RGB")
    return image.convert("RGB")


def _crop_window(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) around the mask with some context, inside the image."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    margin_y = max(8, round((bottom - top) * _CONTEXT_MARGIN))
    margin_x = max(8, round((right - left) * _CONTEXT_MARGIN))
    return max(0, left - margin_x), max(0, top - margin_y), min(width, right + margin_x), min(height, bottom + margin_y)


def _working_size(window: tuple[int, int, int, int], long_side: int) -> tuple[int, int]:
    # Multiples of 32 suit every SDXL UNet (and the tiny one); the long side is the configured canvas size.
    crop_w, crop_h = window[2] - window[0], window[3] - window[1]
    scale = long_side / max(crop_w, crop_h)
    return max(32, round(crop_w * scale / 32) * 32), max(32, round(crop_h * scale / 32) * 32)


def _crop(
    array: np.ndarray, window: tuple[int, int, int, int], size: tuple[int, int], resample: Image.Resampling
) -> Image.Image:
    left, top, right, bottom = window
    return Image.fromarray(np.ascontiguousarray(array[top:bottom, left:right])).resize(size, resample)


def _paste(
    person_rgb: np.ndarray, mask: np.ndarray, generated: Image.Image, window: tuple[int, int, int, int]
) -> np.ndarray:
    """The model photo with the generated pixels inside `mask` only (outside it, the photo's own pixels)."""
    left, top, right, bottom = window
    painted = np.asarray(generated.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS))
    out = person_rgb.copy()
    inside = mask[top:bottom, left:right]
    out[top:bottom, left:right][inside] = painted[inside]
    return out


def _control_image(
    kind: str,
    control: Image.Image | None,
    person_rgb: np.ndarray,
    agnostic: np.ndarray,
    window: tuple[int, int, int, int],
    size: tuple[int, int],
) -> Image.Image:
    """The ControlNet's conditioning image for the crop: given as `inputs["control"]`, or derived when possible.

    canny: edges of the photo outside the agnostic mask (the body's outline, not the old garment's folds).
    depth: without a depth map given, a coarse one: the person (not backdrop-coloured) near, the backdrop far.
    pose: needs a rendered pose image (no pose estimator is configured here).
    """
    if control is not None:
        return _crop(
            np.asarray(control.resize((person_rgb.shape[1], person_rgb.shape[0]))),
            window,
            size,
            Image.Resampling.BILINEAR,
        )
    if kind == "pose":
        raise JobInputError("inputs.control", "the pose ControlNet needs a pose image as inputs.control")
    if kind == "canny":
        grey = cv2.cvtColor(person_rgb, cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(grey, 50, 150)
        edges[agnostic] = 0
        return _crop(np.repeat(edges[..., None], 3, axis=2), window, size, Image.Resampling.BILINEAR)
    from ..segmentation import backdrop_foreground

    near = backdrop_foreground(Image.fromarray(person_rgb)).astype(np.float32)
    depth = cv2.GaussianBlur(near, (0, 0), max(1.0, 0.01 * max(near.shape)))
    depth_u8 = (depth * 255).round().astype(np.uint8)
    return _crop(np.repeat(depth_u8[..., None], 3, axis=2), window, size, Image.Resampling.BILINEAR)
