"""A brand LoRA training run: what to train (`TrainingConfig`) and what it made (`TrainingReport`, `training.json`).

`gpu_jobs.training.lora.train_lora(config, dataset_dir, output_dir)` takes the config and writes the report; the
same config travels to a SageMaker training job as hyperparameters (every value a string there), which
`training_config_from_hyperparameters` turns back into a `TrainingConfig`.
"""

import json
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from ._base import Contract

MixedPrecision = Literal["no", "bf16", "fp16"]
TrainingOptimizer = Literal["adamw", "adamw8bit", "prodigy"]
TrainingDevice = Literal["auto", "cpu", "cuda"]

# The attention projections diffusers' SDXL LoRA scripts adapt (UNet and CLIP text encoders).
DEFAULT_UNET_TARGET_MODULES: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
DEFAULT_TEXT_ENCODER_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")


class TrainingConfig(Contract):
    """Everything one training run needs besides the dataset folder. Defaults follow diffusers' SDXL LoRA scripts."""

    brand: str = Field(min_length=1)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$", description="The adapter's name.")
    trigger_token: str | None = Field(
        default=None, description="The word captions use for the brand's look; pivotal tuning learns its embedding."
    )
    models: str = Field(default="tiny", description="'tiny' or a model-config JSON path, as `catalog run --models`.")
    commercial: bool = Field(default=True, description="A commercial brand refuses a non-commercial base model.")

    # Adapters
    rank: int = Field(default=16, ge=1, le=512)
    alpha: float | None = Field(default=None, gt=0, description="LoRA alpha; None: the rank (scale 1).")
    target_modules: tuple[str, ...] = Field(default=DEFAULT_UNET_TARGET_MODULES, min_length=1)
    train_text_encoder: bool = False
    text_encoder_target_modules: tuple[str, ...] = Field(default=DEFAULT_TEXT_ENCODER_TARGET_MODULES, min_length=1)
    pivotal_tuning: bool = Field(default=False, description="Learn new token embeddings for the trigger (TI).")
    num_new_tokens_per_abstraction: int = Field(default=2, ge=1, le=16)

    # Schedule and optimiser
    max_train_steps: int = Field(default=1000, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0, description="UNet LoRA (Prodigy: 1.0).")
    text_encoder_lr: float | None = Field(default=None, gt=0, description="None: `learning_rate`.")
    embedding_lr: float | None = Field(default=None, gt=0, description="Pivotal token embeddings; None: 5e-4.")
    lr_warmup_steps: int = Field(default=0, ge=0)
    train_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation: int = Field(default=1, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    optimizer: TrainingOptimizer = "adamw"
    adam_weight_decay: float = Field(default=1e-4, ge=0)

    # Data and loss
    resolution: int | None = Field(
        default=None,
        ge=64,
        le=2048,
        description="None: each photo trains at its dataset bucket. A number: buckets rescaled to about that²"
        " pixels, aspect ratio kept.",
    )
    cache_latents: bool = True
    snr_gamma: float | None = Field(default=5.0, gt=0, description="Min-SNR-gamma loss weighting; None: plain MSE.")
    noise_offset: float = Field(default=0.0, ge=0, le=1)
    masked_loss: bool = Field(default=False, description="Weight the loss by the product mask (plus context).")
    mask_context_weight: float = Field(
        default=0.1, ge=0, le=1, description="Loss weight outside the product mask when `masked_loss` is on."
    )
    mask_dilation_px: int = Field(default=16, ge=0, le=256, description="The product mask grows by this much.")

    # Precision and memory
    mixed_precision: MixedPrecision = "no"
    pretrained_vae: str | None = Field(
        default=None,
        description="A local folder with an fp16-safe SDXL VAE (e.g. sdxl-vae-fp16-fix). None: the base model's VAE,"
        " which latents are encoded with in float32 whatever the precision.",
    )
    gradient_checkpointing: bool = False
    device: TrainingDevice = "auto"

    # Checkpoints and validation
    checkpoint_every: int = Field(default=250, ge=1)
    checkpoints_total_limit: int | None = Field(default=3, ge=1, description="Older checkpoints are removed.")
    validation_every: int | None = Field(default=250, ge=1, description="None: only after the last step.")
    validation_prompts: tuple[str, ...] = ()
    validation_seeds: tuple[int, ...] = Field(default=(0, 1), min_length=1)
    validation_inference_steps: int = Field(default=25, ge=1, le=150)
    validation_size: int | None = Field(default=None, ge=64, le=2048, description="None: the training resolution.")
    seed: int = 0

    @model_validator(mode="after")
    def _coherent(self) -> "TrainingConfig":
        if self.mixed_precision == "fp16" and self.device == "cpu":
            raise ValueError(
                "mixed_precision 'fp16' needs a CUDA GPU and device is 'cpu': use mixed_precision 'no' (or 'bf16') "
                "on CPU, or device 'cuda'"
            )
        if self.pivotal_tuning and not self.trigger_token:
            raise ValueError("pivotal_tuning needs a trigger_token: the word whose embeddings it learns")
        if self.trigger_token is not None and not self.trigger_token.strip():
            raise ValueError("trigger_token must not be blank")
        return self

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else float(self.rank)


class LossPoint(Contract):
    step: int
    loss: float
    lr: float


class TrainingReport(Contract):
    """What `training.json` holds: enough to say what was trained, on what, how, where and for how long."""

    brand: str
    name: str
    dataset_sha256: str
    num_images: int
    buckets: dict[str, int] = Field(default_factory=dict, description="`WxH` -> images trained at it.")
    base_model: str = Field(description="The base model's name in the model config.")
    base_model_source: str
    base_model_revision: str | None = None
    base_model_licence: str
    base_model_commercial_use: bool
    config: TrainingConfig
    steps_done: int
    resumed_from_step: int | None = None
    loss_curve: tuple[LossPoint, ...] = ()
    wall_time_s: float = Field(description="This process's time, from loading to the last file written.")
    device: str
    dtype: str = Field(description="The weights' dtype; mixed precision is in `config`.")
    peak_memory_gb: float | None = None
    torch_version: str
    diffusers_version: str
    peft_version: str
    started_at: datetime
    finished_at: datetime
    lora_file: str = "pytorch_lora_weights.safetensors"
    kohya_file: str = "pytorch_lora_weights_kohya.safetensors"
    embeddings_file: str | None = Field(default=None, description="The pivotal tokens, for load_textual_inversion.")
    token_abstraction: str | None = Field(default=None, description="The trigger as captions write it.")
    new_tokens: tuple[str, ...] = Field(default=(), description="What the trigger becomes in prompts, e.g. <s0><s1>.")
    validation_images: tuple[str, ...] = Field(default=(), description="Relative to the output folder.")
    checkpoints: tuple[str, ...] = Field(default=(), description="Complete checkpoints left, e.g. checkpoint-250.")


def _accepts(annotation: object, kind: type) -> bool:
    """True when `annotation` (possibly Optional/Literal/tuple) admits values of `kind`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, kind) for arg in typing.get_args(annotation))
    if origin is Literal:
        return any(isinstance(arg, kind) for arg in typing.get_args(annotation))
    if origin is not None:
        return origin is kind or (isinstance(origin, type) and issubclass(origin, kind))
    return annotation is kind


def training_config_from_hyperparameters(raw: Mapping[str, object]) -> TrainingConfig:
    """Parse SageMaker hyperparameters (`/opt/ml/input/config/hyperparameters.json`) into a `TrainingConfig`.

    SageMaker delivers every value as a string, and the SDK's framework estimators JSON-encode them first
    (`"\\"acme\\""`, `"16"`, `"[\\"a\\", \\"b\\"]"`). Each value is JSON-decoded where that gives a value of
    the field's type. List fields take a JSON list, or comma-separated text (`validation_prompts`, whose prompts
    hold commas, takes one prompt as text). Keys SageMaker adds itself (`sagemaker_*`) are ignored; any other
    unknown key is an error naming it.
    """
    fields = TrainingConfig.model_fields
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key.startswith("sagemaker_"):
            continue
        field = fields.get(key)
        if field is None or not isinstance(value, str):
            values[key] = value  # unknown keys are refused by the model, with their name
            continue
        values[key] = _hyperparameter_value(key, value, field.annotation)
    return TrainingConfig.model_validate(values)


def _hyperparameter_value(key: str, value: str, annotation: object) -> object:
    try:
        decoded: object = json.loads(value)
    except json.JSONDecodeError:
        decoded = value
    if _accepts(annotation, tuple):
        if isinstance(decoded, list):
            return tuple(decoded)
        if decoded is None:
            return None
        if isinstance(decoded, int) and not isinstance(decoded, bool):
            return (decoded,)
        text = decoded if isinstance(decoded, str) else value
        if key == "validation_prompts":
            return (text,)
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if isinstance(decoded, str):
        return decoded
    if decoded is None and _accepts(annotation, type(None)):
        return None
    if _accepts(annotation, str) and not any(_accepts(annotation, kind) for kind in (bool, int, float)):
        return value  # a name such as "123" stays text
    return decoded


def training_config_to_hyperparameters(config: TrainingConfig) -> dict[str, str]:
    """The reverse: a `TrainingConfig` as SageMaker hyperparameters (JSON-encoded strings, defaults left out)."""
    return {key: json.dumps(value) for key, value in config.model_dump(mode="json", exclude_defaults=True).items()}
