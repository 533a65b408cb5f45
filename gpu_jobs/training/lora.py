"""Train a brand's SDXL LoRA (optionally with text-encoder LoRA and pivotal-tuning token embeddings).

    from gpu_jobs.training.lora import train_lora
    from schemas.training import TrainingConfig

    config = TrainingConfig(brand="acme", name="summer", trigger_token="acmestyle", models="tiny",
                            max_train_steps=8, checkpoint_every=4, validation_every=4, device="cpu")
    report = train_lora(config, Path("DS"), Path("OUT"))      # OUT/pytorch_lora_weights.safetensors, training.json

Reads `DS/dataset.json` (`schemas.dataset.DatasetManifest`): the kept photos at their aspect-ratio buckets, their
captions from the `.txt` files (edits included) and, for the masked loss, their product masks. Writes into the
output folder the adapter in diffusers' format (`pipe.load_lora_weights`), the same adapter in kohya's key format
(AUTOMATIC1111, ComfyUI, kohya's tools), the pivotal token embeddings (`pipe.load_textual_inversion`), a validation
grid every `validation_every` steps and `training.json` (`schemas.training.TrainingReport`).

Checkpoints (`checkpoint-<step>/`, accelerate `save_state`) are written to a temporary folder and renamed, so a run
killed at any moment leaves only complete ones; a new call with the same config and dataset resumes from the newest
and continues exactly as if it had not stopped: the data order is a function of the seed and the step, and the
noise comes from a generator whose state is checkpointed.

Adapted from diffusers examples/dreambooth/train_dreambooth_lora_sdxl.py and
examples/advanced_diffusion_training/train_dreambooth_lora_sdxl_advanced.py (Apache-2.0): the prompt encoding,
time ids, LoRA configs, Min-SNR weighting, noise offset, pivotal token handling and the kohya export follow them.
What differs, and why: latents and frozen text embeddings are computed once (the scripts encode every step);
the new token embeddings are trained as their own small parameter (not the whole vocabulary with its optimiser
state); data order and noise are reproducible from a checkpoint.
"""

import hashlib
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageFilter
from pydantic import ValidationError

from schemas.dataset import DatasetManifest, dataset_digest
from schemas.training import LossPoint, TrainingConfig, TrainingReport

from ..config import ModelConfig, ModelSpec
from ..licences import check_licence

logger = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "pytorch_lora_weights_kohya.safetensors"
EMBEDDINGS_FILE = "learned_embeds.safetensors"
REPORT_FILE = "training.json"
CHECKPOINT_MARKER = "checkpoint.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# The fields that change what a step computes; a checkpoint resumes only under the same ones (validation,
# checkpoint cadence and the step budget may change between tries).
_RESUME_IGNORES = frozenset(
    {
        "max_train_steps",
        "checkpoint_every",
        "checkpoints_total_limit",
        "validation_every",
        "validation_prompts",
        "validation_seeds",
        "validation_inference_steps",
        "validation_size",
        "device",
    }
)
DEFAULT_EMBEDDING_LR = 5e-4
# Text-encoder names in the embeddings file, as the advanced script and the tools that load it expect.
_EMBEDDING_KEYS = ("clip_l", "clip_g")

ProgressCallback = Callable[[int, int, float], None]


class TrainingInputError(ValueError):
    """The dataset or config cannot be trained on; the message names the file or field and the reason."""


# ---- the dataset ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingExample:
    id: str
    image_path: Path
    mask_path: Path | None
    caption: str
    bucket: tuple[int, int]  # (width, height)


def _inside(dataset_dir: Path, relative: str, what: str) -> Path:
    path = (dataset_dir / relative).resolve()
    if not path.is_relative_to(dataset_dir.resolve()):
        raise TrainingInputError(f"dataset.json: {what} '{relative}' lies outside the dataset folder")
    if not path.is_file():
        raise TrainingInputError(f"dataset.json: {what} '{relative}' does not exist in {dataset_dir}")
    return path


def read_caption(path: Path) -> str:
    """A caption `.txt` as the user left it; anything but UTF-8 is refused, naming the file."""
    try:
        return path.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError as error:
        raise TrainingInputError(
            f"caption file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8 and run training again"
        ) from None


def read_dataset(dataset_dir: Path, *, need_masks: bool) -> tuple[DatasetManifest, list[TrainingExample], str]:
    """The kept photos of `dataset_dir/dataset.json`, their captions as edited, and the hash of what trains."""
    manifest_path = dataset_dir / "dataset.json"
    if not manifest_path.is_file():
        raise TrainingInputError(f"{manifest_path} not found: run the dataset check on the photos first")
    try:
        manifest = DatasetManifest.model_validate_json(manifest_path.read_bytes())
    except ValidationError as error:
        raise TrainingInputError(f"{manifest_path} is not a valid dataset manifest: {error}") from None
    examples: list[TrainingExample] = []
    for photo in sorted(manifest.kept, key=lambda p: p.id):
        field = f"photo '{photo.id}'"
        if photo.image_file is None or photo.bucket is None:
            raise TrainingInputError(f"dataset.json: {field} is kept but has no image_file or bucket")
        image_path = _inside(dataset_dir, photo.image_file, f"{field} image_file")
        if photo.caption_file is not None:
            caption = read_caption(_inside(dataset_dir, photo.caption_file, f"{field} caption_file"))
        else:
            caption = (photo.caption or "").strip()
        mask_path = _inside(dataset_dir, photo.mask_file, f"{field} mask_file") if photo.mask_file else None
        if need_masks and mask_path is None:
            raise TrainingInputError(f"dataset.json: {field} has no mask_file, and masked_loss is on")
        examples.append(TrainingExample(photo.id, image_path, mask_path, caption, photo.bucket))
    if not examples:
        raise TrainingInputError(f"{manifest_path}: no kept photos to train on")
    digest = dataset_digest((example.id, example.image_path.read_bytes(), example.caption) for example in examples)
    return manifest, examples, digest


def _scaled_bucket(bucket: tuple[int, int], resolution: int | None, multiple: int) -> tuple[int, int]:
    """The bucket itself, or rescaled to about resolution² pixels with its aspect ratio, on the latent grid."""
    scale = 1.0 if resolution is None else resolution / math.sqrt(bucket[0] * bucket[1])
    width, height = (max(multiple, round(side * scale / multiple) * multiple) for side in bucket)
    return width, height


def _load_pixels(
    example: TrainingExample, size: tuple[int, int]
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """The photo resized to cover `size` and centre-cropped: [-1, 1] CHW, its (h, w) and the crop's (top, left)."""
    with Image.open(example.image_path) as opened:
        image = opened.convert("RGB")
    original = (image.height, image.width)
    width, height = size
    scale = max(width / image.width, height / image.height)
    resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))))
    top, left = (resized.height - height) // 2, (resized.width - width) // 2
    cropped = resized.crop((left, top, left + width, top + height))
    pixels = torch.frombuffer(bytearray(cropped.tobytes()), dtype=torch.uint8).view(height, width, 3)
    return pixels.permute(2, 0, 1).float() / 127.5 - 1.0, original, (top, left)


def _load_loss_weights(
    example: TrainingExample, size: tuple[int, int], latent_size: tuple[int, int], config: TrainingConfig
) -> torch.Tensor:
    """The masked loss's weights at latent size: 1 on the (dilated) product, `mask_context_weight` elsewhere."""
    assert example.mask_path is not None
    with Image.open(example.mask_path) as opened:
        mask = opened.convert("L")
    width, height = size
    scale = max(width / mask.width, height / mask.height)
    mask = mask.resize((max(width, round(mask.width * scale)), max(height, round(mask.height * scale))))
    top, left = (mask.height - height) // 2, (mask.width - width) // 2
    mask = mask.crop((left, top, left + width, top + height))
    if config.mask_dilation_px:
        mask = mask.filter(ImageFilter.MaxFilter(2 * (config.mask_dilation_px // 2) + 1))
    product = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).view(1, 1, height, width).float() / 255
    product = torch.nn.functional.adaptive_avg_pool2d(product, latent_size)[0]
    return config.mask_context_weight + (1.0 - config.mask_context_weight) * product


def batch_plan(buckets: Sequence[tuple[int, int]], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: each bucket's examples shuffled and cut into batches, the batches shuffled.

    A function of (seed, epoch) only, so a resumed run draws the same batches as an uninterrupted one.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    batches: list[list[int]] = []
    for bucket in sorted(set(buckets)):
        members = [index for index, value in enumerate(buckets) if value == bucket]
        order = torch.randperm(len(members), generator=generator).tolist()
        shuffled = [members[i] for i in order]
        batches += [shuffled[start : start + batch_size] for start in range(0, len(shuffled), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


# ---- the pivotal tokens ----------------------------------------------------------------------------------------
class TokenEmbeddingWithNewTokens(torch.nn.Module):
    """A text encoder's token embedding whose new tokens' rows are a trainable parameter of their own.

    The vocabulary stays frozen (no optimiser state for 49k rows, nothing to restore after each step, as the
    advanced script must); a looked-up new token takes its row from `new_rows`.
    """

    new_ids: torch.Tensor

    def __init__(self, base: torch.nn.Embedding, new_ids: Sequence[int], generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("new_ids", torch.tensor(list(new_ids), dtype=torch.long), persistent=False)
        std = base.weight.detach().float().std()
        rows = torch.randn(len(new_ids), base.embedding_dim, generator=generator) * std
        self.new_rows = torch.nn.Parameter(rows.to(base.weight.device))

    @property
    def weight(self) -> torch.Tensor:  # what transformers' resize/get_input_embeddings code reads
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.base(input_ids)
        matches = torch.eq(input_ids.unsqueeze(-1), self.new_ids)  # (..., new)
        replaced = matches.to(self.new_rows.dtype) @ self.new_rows
        return torch.where(matches.any(-1, keepdim=True), replaced.to(embedded.dtype), embedded)


def _text_embeddings(text_encoder: Any) -> Any:
    return (text_encoder.text_model if hasattr(text_encoder, "text_model") else text_encoder).embeddings


def add_pivotal_tokens(
    trigger: str, count: int, tokenizers: Sequence[Any], text_encoders: Sequence[Any], seed: int
) -> tuple[list[str], list[TokenEmbeddingWithNewTokens]]:
    """Add `<s0>..<s{count-1}>` to both tokenizers and give each text encoder trainable rows for them."""
    new_tokens = [f"<s{i}>" for i in range(count)]
    generator = torch.Generator().manual_seed(seed + 17)
    modules: list[TokenEmbeddingWithNewTokens] = []
    for tokenizer, text_encoder in zip(tokenizers, text_encoders, strict=True):
        tokenizer.add_tokens([token for token in new_tokens if token not in tokenizer.get_vocab()])
        ids = tokenizer.convert_tokens_to_ids(new_tokens)
        embeddings = _text_embeddings(text_encoder)
        if max(ids) >= embeddings.token_embedding.num_embeddings:
            text_encoder.resize_token_embeddings(len(tokenizer))
        module = TokenEmbeddingWithNewTokens(embeddings.token_embedding, ids, generator)
        embeddings.token_embedding = module
        modules.append(module)
    logger.info("pivotal tuning: '%s' becomes %s", trigger, "".join(new_tokens))
    return new_tokens, modules


# ---- prompts (adapted from the diffusers scripts' tokenize_prompt / encode_prompt) ---------------------------
def tokenize(tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode_prompt(
    text_encoders: Sequence[Any], token_ids: Sequence[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's conditioning: both encoders' penultimate hidden states side by side, and the second's pooled output."""
    embeds_list = []
    pooled = torch.empty(0)
    for text_encoder, ids in zip(text_encoders, token_ids, strict=True):
        out = text_encoder(ids.to(device), output_hidden_states=True, return_dict=False)
        pooled = out[0]  # the last encoder's (projected) pooled output is the one SDXL uses
        embeds_list.append(out[-1][-2])
    embeds = torch.cat(embeds_list, dim=-1)
    return embeds, pooled.view(embeds.shape[0], -1)


# ---- checkpoints ---------------------------------------------------------------------------------------------
class _TrainableState:
    """The trained tensors only (LoRA layers, new token rows), for accelerate's `register_for_checkpointing`."""

    def __init__(self, parameters: dict[str, torch.nn.Parameter]) -> None:
        self.parameters = parameters

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().cpu().clone() for name, value in self.parameters.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.parameters) - set(state)
        if missing:
            raise TrainingInputError(f"checkpoint lacks {len(missing)} trained tensors, e.g. {sorted(missing)[0]}")
        with torch.no_grad():
            for name, value in self.parameters.items():
                value.copy_(state[name].to(value.device, value.dtype))


class _GeneratorState:
    """The noise and timestep generator, checkpointed so that a resumed run draws the same noise."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])


def _fingerprint(config: TrainingConfig, dataset_sha256: str) -> str:
    settings = config.model_dump(mode="json", exclude=set(_RESUME_IGNORES))
    return hashlib.sha256(json.dumps([settings, dataset_sha256], sort_keys=True).encode()).hexdigest()


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under `root`, oldest first."""
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _CHECKPOINT_NAME.match(child.name)
            if match and (child / CHECKPOINT_MARKER).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def _save_checkpoint(accelerator: Any, root: Path, step: int, marker: dict[str, Any], keep: int | None) -> Path:
    """accelerate `save_state` into a temp folder, then rename: a kill leaves no half-written `checkpoint-N`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    temporary = root / f".checkpoint-{step}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    accelerator.save_state(str(temporary), safe_serialization=True)
    (temporary / CHECKPOINT_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    if keep is not None:
        for _, old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _sweep_partial_checkpoints(root: Path) -> None:
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".checkpoint-") and ".tmp-" in child.name:
                shutil.rmtree(child, ignore_errors=True)


# ---- loading -------------------------------------------------------------------------------------------------
def load_base_model_config(models: str) -> ModelConfig:
    """'tiny' or a model-config JSON path, as `catalog run --models` takes it."""
    if models == "tiny":
        return ModelConfig.tiny()
    path = Path(models)
    if not path.is_file():
        raise TrainingInputError(f"models: model config not found: {models} (pass 'tiny' or a ModelConfig JSON)")
    return ModelConfig.from_file(path)


def _load_components(spec: ModelSpec, model_config: ModelConfig) -> dict[str, Any]:
    from diffusers import StableDiffusionXLPipeline

    if spec.is_tiny:
        from ..tiny_models import build_tiny_sdxl_components

        return build_tiny_sdxl_components(seed=0)
    if spec.is_local and not Path(spec.source).exists():
        raise TrainingInputError(f"model '{spec.name}': local weights not found at {spec.source}")
    kwargs: dict[str, Any] = {"local_files_only": not model_config.allow_downloads}
    for key in ("revision", "variant", "subfolder"):
        if getattr(spec, key) is not None:
            kwargs[key] = getattr(spec, key)
    pipe = StableDiffusionXLPipeline.from_pretrained(spec.source, **kwargs)
    return dict(pipe.components)


def _resolve_device(config: TrainingConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainingInputError("device: 'cuda' was asked for but no CUDA device is available")
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if device.type == "cpu" and config.mixed_precision == "fp16":
        raise TrainingInputError(
            "mixed_precision: 'fp16' needs a CUDA GPU and this run is on the CPU; use 'no' (or 'bf16') on CPU"
        )
    return device


def _optimizer_class(config: TrainingConfig) -> Any:
    if config.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise TrainingInputError("optimizer: 'adamw8bit' needs the bitsandbytes package") from None
        return bnb.optim.AdamW8bit
    if config.optimizer == "prodigy":
        try:
            import prodigyopt
        except ImportError:
            raise TrainingInputError("optimizer: 'prodigy' needs the prodigyopt package") from None
        return prodigyopt.Prodigy
    return torch.optim.AdamW


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB


# ---- training ------------------------------------------------------------------------------------------------
def train_lora(
    config: TrainingConfig,
    dataset_dir: Path,
    output_dir: Path,
    *,
    checkpoint_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingReport:
    """Train the brand adapter `config` describes on `dataset_dir`, write it into `output_dir`, return the report."""
    import diffusers
    import peft
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import compute_snr
    from peft import LoraConfig, inject_adapter_in_model

    started_at = datetime.now(UTC)
    started = time.perf_counter()

    # 1. Check inputs: device and precision, the base model's licence, the dataset, the optimiser.
    device = _resolve_device(config)
    model_config = load_base_model_config(config.models)
    base = model_config.base
    check_licence(base, commercial=config.commercial or model_config.commercial)
    manifest, examples, dataset_sha256 = read_dataset(dataset_dir, need_masks=config.masked_loss)
    optimizer_class = _optimizer_class(config)
    trigger = config.trigger_token or manifest.trigger_token
    if config.pivotal_tuning and not any(trigger and trigger in example.caption for example in examples):
        raise TrainingInputError(f"pivotal_tuning: no caption contains the trigger token '{trigger}'")
    checkpoint_root = checkpoint_dir or output_dir / "checkpoints"
    output_dir.mkdir(parents=True, exist_ok=True)
    _sweep_partial_checkpoints(checkpoint_root)

    AcceleratorState._reset_state(reset_partial_state=True)  # a previous run in this process may differ in precision
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu")
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    if device.type == "cpu":
        weight_dtype = torch.float32  # CPU bf16 runs under autocast; frozen weights stay float32 there
    try:
        # 2. Load the base model, frozen, in the weight dtype; the VAE stays float32 (SDXL's overflows in fp16).
        components = _load_components(base, model_config)
        unet, vae = components["unet"], components["vae"]
        text_encoders = [components["text_encoder"], components["text_encoder_2"]]
        tokenizers = [components["tokenizer"], components["tokenizer_2"]]
        if config.pretrained_vae is not None:
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(config.pretrained_vae, local_files_only=True)
        noise_scheduler = DDPMScheduler.from_config(components["scheduler"].config)
        for module in (unet, vae, *text_encoders):
            module.requires_grad_(False)
        unet.to(device, dtype=weight_dtype)
        if device.type == "cuda":
            unet.to(memory_format=torch.channels_last)  # faster convolutions under bf16/fp16 on tensor cores
        vae.to(device, dtype=torch.float32)
        for text_encoder in text_encoders:
            text_encoder.to(device, dtype=weight_dtype)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            if config.train_text_encoder:
                for text_encoder in text_encoders:
                    text_encoder.gradient_checkpointing_enable()

        # 3. Add the adapters: UNet LoRA, optional text-encoder LoRA, optional pivotal tokens. The trained tensors
        #    are float32 whatever the precision (diffusers' cast_training_params).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            unet.add_adapter(
                LoraConfig(
                    r=config.rank,
                    lora_alpha=config.lora_alpha,  # type: ignore[arg-type]  # peft scales by any number
                    init_lora_weights="gaussian",
                    target_modules=list(config.target_modules),
                )
            )
            if config.train_text_encoder:
                # peft's own injection: transformers' `add_adapter` asks for a newer peft than diffusers needs.
                for text_encoder in text_encoders:
                    inject_adapter_in_model(
                        LoraConfig(
                            r=config.rank,
                            lora_alpha=config.lora_alpha,  # type: ignore[arg-type]  # peft scales by any number
                            init_lora_weights="gaussian",
                            target_modules=list(config.text_encoder_target_modules),
                        ),
                        text_encoder,
                    )
        new_tokens: list[str] = []
        token_modules: list[TokenEmbeddingWithNewTokens] = []
        if config.pivotal_tuning:
            assert trigger is not None
            new_tokens, token_modules = add_pivotal_tokens(
                trigger, config.num_new_tokens_per_abstraction, tokenizers, text_encoders, config.seed
            )
        trained: dict[str, torch.nn.Parameter] = {}
        for prefix, model in (("unet", unet), ("text_encoder", text_encoders[0]), ("text_encoder_2", text_encoders[1])):
            for name, parameter in model.named_parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
                    trained[f"{prefix}.{name}"] = parameter
        unet_params = [p for name, p in trained.items() if name.startswith("unet.")]
        text_params = [p for name, p in trained.items() if not name.startswith("unet.") and "new_rows" not in name]
        embedding_params = [module.new_rows for module in token_modules]
        if not unet_params:
            raise TrainingInputError(f"target_modules: {list(config.target_modules)} matched no UNet layer")

        # 4. Data: captions with the trigger replaced by the new tokens, latents and frozen text embeddings cached.
        def for_prompt(text: str) -> str:
            return text.replace(trigger, "".join(new_tokens)) if new_tokens and trigger else text

        captions = [for_prompt(example.caption) for example in examples]
        token_ids = [tokenize(tokenizer, captions) for tokenizer in tokenizers]
        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        multiple = vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
        sizes = [_scaled_bucket(example.bucket, config.resolution, multiple) for example in examples]
        latent_means: list[torch.Tensor] = []
        latent_stds: list[torch.Tensor] = []
        time_ids: list[torch.Tensor] = []
        loss_weights: list[torch.Tensor | None] = []
        with torch.no_grad():
            for example, size in zip(examples, sizes, strict=True):
                pixels, original, crop = _load_pixels(example, size)
                # SDXL's micro-conditioning: original size, crop top-left, target size, each (h, w).
                time_ids.append(torch.tensor([*original, *crop, size[1], size[0]], dtype=weight_dtype))
                if config.cache_latents:
                    dist = vae.encode(pixels.unsqueeze(0).to(device)).latent_dist
                    latent_means.append(dist.mean[0])
                    latent_stds.append(dist.std[0])
                latent_size = (size[1] // vae_scale, size[0] // vae_scale)
                loss_weights.append(
                    _load_loss_weights(example, size, latent_size, config).to(device) if config.masked_loss else None
                )
            frozen_text = not (config.train_text_encoder or config.pivotal_tuning)
            cached_embeds = cached_pooled = None
            if frozen_text:
                cached_embeds, cached_pooled = encode_prompt(text_encoders, token_ids, device)
        scaling_factor = vae.config.scaling_factor
        latents_mean = getattr(vae.config, "latents_mean", None)
        latents_std = getattr(vae.config, "latents_std", None)

        def latents_for(index: int, generator: torch.Generator) -> torch.Tensor:
            if config.cache_latents:
                mean, std = latent_means[index], latent_stds[index]
            else:
                with torch.no_grad():
                    pixels, _, _ = _load_pixels(examples[index], sizes[index])
                    dist = vae.encode(pixels.unsqueeze(0).to(device)).latent_dist
                    mean, std = dist.mean[0], dist.std[0]
            sample = mean + std * torch.randn(mean.shape, generator=generator, device=device)
            if latents_mean is not None and latents_std is not None:
                shift = torch.tensor(latents_mean, device=device).view(-1, 1, 1)
                spread = torch.tensor(latents_std, device=device).view(-1, 1, 1)
                return (sample - shift) * scaling_factor / spread
            return sample * scaling_factor

        # 5. Optimiser, learning-rate schedule, checkpointed state; resume from the newest complete checkpoint.
        embedding_lr = config.embedding_lr or DEFAULT_EMBEDDING_LR
        text_lr = config.text_encoder_lr or config.learning_rate
        if config.optimizer == "prodigy":  # Prodigy adapts one step size; the scripts give every group the same lr
            embedding_lr = text_lr = config.learning_rate
        groups: list[dict[str, Any]] = [{"params": unet_params, "lr": config.learning_rate}]
        if text_params:
            groups.append({"params": text_params, "lr": text_lr})
        if embedding_params:
            groups.append({"params": embedding_params, "lr": embedding_lr, "weight_decay": 0.0})
        optimizer = optimizer_class(groups, weight_decay=config.adam_weight_decay)
        lr_scheduler = get_scheduler(
            "constant_with_warmup" if config.lr_warmup_steps else "constant",
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps,
        )
        optimizer, lr_scheduler = accelerator.prepare(optimizer, lr_scheduler)
        noise_generator = torch.Generator(device=device).manual_seed(config.seed)
        accelerator.register_for_checkpointing(_TrainableState(trained))
        accelerator.register_for_checkpointing(_GeneratorState(noise_generator))
        fingerprint = _fingerprint(config, dataset_sha256)
        loss_curve: list[LossPoint] = []
        step = 0
        resumed_from: int | None = None
        existing = complete_checkpoints(checkpoint_root)
        if existing:
            resumed_from, folder = existing[-1]
            marker = json.loads((folder / CHECKPOINT_MARKER).read_text(encoding="utf-8"))
            if marker.get("fingerprint") != fingerprint:
                raise TrainingInputError(
                    f"checkpoint {folder} was written for another config or dataset; "
                    "resume with the same ones, or give a fresh checkpoint folder"
                )
            accelerator.load_state(str(folder))
            step = resumed_from
            loss_curve = [LossPoint.model_validate(point) for point in marker["loss_curve"]]
            logger.info("resuming from %s (step %d of %d)", folder, step, config.max_train_steps)

        # 6. Train: Min-SNR-weighted (optionally masked) noise-prediction loss, accumulated over micro-batches.
        buckets = [(size[0], size[1]) for size in sizes]
        plans: dict[int, list[list[int]]] = {}
        per_epoch = len(batch_plan(buckets, config.train_batch_size, config.seed, 0))
        trainable_models = [unet] + (text_encoders if not frozen_text else [])
        validation_images: list[str] = []
        while step < config.max_train_steps:
            for model in trainable_models:
                model.train()
            step_loss = 0.0
            for micro in range(config.gradient_accumulation):
                position = step * config.gradient_accumulation + micro
                epoch = position // per_epoch
                if epoch not in plans:
                    plans = {epoch: batch_plan(buckets, config.train_batch_size, config.seed, epoch)}
                batch = plans[epoch][position % per_epoch]
                with accelerator.autocast():
                    latents = torch.stack([latents_for(index, noise_generator) for index in batch])
                    noise = torch.randn(latents.shape, generator=noise_generator, device=device)
                    if config.noise_offset:
                        # https://www.crosslabs.org//blog/diffusion-with-offset-noise
                        offset = torch.randn((*latents.shape[:2], 1, 1), generator=noise_generator, device=device)
                        noise = noise + config.noise_offset * offset
                    timesteps = torch.randint(
                        0,
                        noise_scheduler.config.num_train_timesteps,
                        (len(batch),),
                        generator=noise_generator,
                        device=device,
                    ).long()
                    noisy = noise_scheduler.add_noise(latents, noise, timesteps).to(weight_dtype)
                    if frozen_text:
                        assert cached_embeds is not None and cached_pooled is not None
                        embeds, pooled = cached_embeds[batch], cached_pooled[batch]
                    else:
                        embeds, pooled = encode_prompt(text_encoders, [ids[batch] for ids in token_ids], device)
                    added = {"time_ids": torch.stack([time_ids[i] for i in batch]).to(device), "text_embeds": pooled}
                    prediction = unet(noisy, timesteps, embeds, added_cond_kwargs=added, return_dict=False)[0]
                    if noise_scheduler.config.prediction_type == "v_prediction":
                        target = noise_scheduler.get_velocity(latents, noise, timesteps)
                    else:
                        target = noise
                    squared = (prediction.float() - target.float()) ** 2
                    if config.masked_loss:
                        weights = torch.stack([loss_weights[i] for i in batch])  # type: ignore[misc]
                        per_sample = (squared * weights).mean(dim=(1, 2, 3)) / weights.mean(dim=(1, 2, 3))
                    else:
                        per_sample = squared.mean(dim=(1, 2, 3))
                    if config.snr_gamma is not None:
                        # Min-SNR weighting, section 3.4 of https://huggingface.co/papers/2303.09556.
                        snr = compute_snr(noise_scheduler, timesteps)
                        snr_weight = torch.minimum(snr, torch.full_like(snr, config.snr_gamma)) / snr
                        if noise_scheduler.config.prediction_type == "v_prediction":
                            snr_weight = snr_weight + 1
                        per_sample = per_sample * snr_weight
                    loss = per_sample.mean()
                accelerator.backward(loss / config.gradient_accumulation)
                step_loss += loss.detach().item() / config.gradient_accumulation
            accelerator.clip_grad_norm_(list(trained.values()), config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_curve.append(LossPoint(step=step, loss=step_loss, lr=float(lr_scheduler.get_last_lr()[0])))
            if progress is not None:
                progress(step, config.max_train_steps, step_loss)

            if step % config.checkpoint_every == 0 and step < config.max_train_steps:
                marker = {
                    "step": step,
                    "fingerprint": fingerprint,
                    "loss_curve": [p.model_dump() for p in loss_curve],
                }
                _save_checkpoint(accelerator, checkpoint_root, step, marker, config.checkpoints_total_limit)
            last = step == config.max_train_steps
            if last or (config.validation_every is not None and step % config.validation_every == 0):
                validation_images += _validate(
                    config,
                    step,
                    output_dir,
                    components,
                    unet,
                    vae,
                    text_encoders,
                    tokenizers,
                    [for_prompt(prompt) for prompt in config.validation_prompts] or captions[:1],
                    Counter(buckets).most_common(1)[0][0],
                    device,
                    accelerator,
                )

        # 7. Save: the diffusers LoRA, its kohya export, the pivotal embeddings, training.json.
        embeddings_file = None
        _save_lora(output_dir, unet, text_encoders if config.train_text_encoder else None, config)
        if token_modules:
            from safetensors.torch import save_file

            tensors = {
                key: module.new_rows.detach().to("cpu", torch.float32).contiguous()
                for key, module in zip(_EMBEDDING_KEYS, token_modules, strict=True)
            }
            save_file(tensors, str(output_dir / EMBEDDINGS_FILE))
            embeddings_file = EMBEDDINGS_FILE
        report = TrainingReport(
            brand=config.brand,
            name=config.name,
            dataset_sha256=dataset_sha256,
            num_images=len(examples),
            buckets={f"{w}x{h}": count for (w, h), count in sorted(Counter(buckets).items())},
            base_model=base.name,
            base_model_source=base.source,
            base_model_revision=base.revision,
            base_model_licence=base.licence,
            base_model_commercial_use=base.commercial_use,
            config=config,
            steps_done=step,
            resumed_from_step=resumed_from,
            loss_curve=tuple(loss_curve),
            wall_time_s=round(time.perf_counter() - started, 3),
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
            dtype=str(weight_dtype).removeprefix("torch."),
            peak_memory_gb=round(_peak_memory_gb(device), 3),
            torch_version=torch.__version__,
            diffusers_version=diffusers.__version__,
            peft_version=peft.__version__,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            embeddings_file=embeddings_file,
            token_abstraction=trigger if new_tokens else None,
            new_tokens=tuple(new_tokens),
            validation_images=tuple(validation_images),
            checkpoints=tuple(path.name for _, path in complete_checkpoints(checkpoint_root)),
        )
        (output_dir / REPORT_FILE).write_text(report.model_dump_json(indent=2), encoding="utf-8")
        return report
    finally:
        accelerator.free_memory()
        AcceleratorState._reset_state(reset_partial_state=True)


def _lora_state(model: Any, config: TrainingConfig) -> dict[str, torch.Tensor]:
    """The peft LoRA tensors with alpha/rank folded into lora_B: loaders that assume alpha = rank read it right."""
    from peft.utils import get_peft_model_state_dict

    scale = config.lora_alpha / config.rank
    state = get_peft_model_state_dict(model)
    return {
        key: (value * scale if "lora_B" in key else value).detach().to("cpu", torch.float32).contiguous()
        for key, value in state.items()
    }


def _save_lora(output_dir: Path, unet: Any, text_encoders: Sequence[Any] | None, config: TrainingConfig) -> None:
    """`pytorch_lora_weights.safetensors` (diffusers) and its kohya twin, from the same peft tensors."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from safetensors.torch import save_file

    parts = {"unet": _lora_state(unet, config)}
    if text_encoders is not None:
        parts["text_encoder"] = _lora_state(text_encoders[0], config)
        parts["text_encoder_2"] = _lora_state(text_encoders[1], config)
    StableDiffusionXLPipeline.save_lora_weights(
        str(output_dir),
        weight_name=LORA_FILE,
        unet_lora_layers=convert_state_dict_to_diffusers(parts["unet"]),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(parts["text_encoder"]) if text_encoders else None,
        text_encoder_2_lora_layers=convert_state_dict_to_diffusers(parts["text_encoder_2"]) if text_encoders else None,
    )
    # Kohya names text-encoder layers from CLIP's `text_model`, which newer transformers no longer nest under.
    peft_state = {
        f"{prefix}.{'text_model.' if prefix != 'unet' and not key.startswith('text_model.') else ''}{key}": value
        for prefix, state in parts.items()
        for key, value in state.items()
    }
    save_file(convert_state_dict_to_kohya(peft_state), str(output_dir / KOHYA_FILE))


def _decode(vae: Any, image_processor: Any, latents: torch.Tensor) -> Image.Image:
    """Latents to an image with the VAE in float32 outside autocast: SDXL's VAE overflows in fp16."""
    with torch.autocast(latents.device.type, enabled=False):
        latents = latents.to(torch.float32)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            shift = torch.tensor(mean, device=latents.device).view(1, -1, 1, 1)
            spread = torch.tensor(std, device=latents.device).view(1, -1, 1, 1)
            latents = latents * spread / vae.config.scaling_factor + shift
        else:
            latents = latents / vae.config.scaling_factor
        decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    image: Image.Image = image_processor.postprocess(decoded.float(), output_type="pil")[0]
    return image


def _validate(
    config: TrainingConfig,
    step: int,
    output_dir: Path,
    components: dict[str, Any],
    unet: Any,
    vae: Any,
    text_encoders: Sequence[Any],
    tokenizers: Sequence[Any],
    prompts: Sequence[str],
    bucket: tuple[int, int],
    device: torch.device,
    accelerator: Any,
) -> list[str]:
    """Fixed prompts x fixed seeds with the adapter as it is now: `validation/step-<N>/prompt-<i>-seed<S>.png`."""
    from diffusers import StableDiffusionXLPipeline

    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoders[0],
        text_encoder_2=text_encoders[1],
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        unet=unet,
        scheduler=components["scheduler"],
    )
    pipe.set_progress_bar_config(disable=True)
    width, height = (config.validation_size,) * 2 if config.validation_size else bucket
    folder = output_dir / "validation" / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    rows: list[list[Image.Image]] = []
    for model in (unet, *text_encoders):
        model.eval()
    with torch.no_grad(), accelerator.autocast():
        for index, prompt in enumerate(prompts):
            row = []
            for seed in config.validation_seeds:
                generator = torch.Generator(device=device).manual_seed(seed)
                latents = pipe(
                    prompt,
                    width=width,
                    height=height,
                    num_inference_steps=config.validation_inference_steps,
                    generator=generator,
                    output_type="latent",
                ).images
                image = _decode(vae, pipe.image_processor, latents)
                path = folder / f"prompt-{index}-seed{seed}.png"
                image.save(path)
                written.append(os.path.relpath(path, output_dir))
                row.append(image)
            rows.append(row)
    grid = Image.new("RGB", (width * len(config.validation_seeds), height * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            grid.paste(image, (x * width, y * height))
    grid.save(folder / "grid.png")
    written.append(os.path.relpath(folder / "grid.png", output_dir))
    return written
