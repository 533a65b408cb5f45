"""Build the models once per process and share them between recipes: the `ModelRegistry`.

One SDXL base is loaded; text-to-image, img2img and inpaint pipelines (with or without a ControlNet)
are views of it made with `from_pipe`, so they share every weight. Brand LoRAs are loaded by name
from their URIs into that base, kept (least recently used dropped past `max_cached_adapters`) and
switched per request with `set_adapters`; the base is never reloaded.

    from gpu_jobs.config import ModelConfig
    from gpu_jobs.models import ModelRegistry

    registry = ModelRegistry(ModelConfig.tiny())
    versions = registry.use_adapters(brand.adapters)          # {} and LoRAs off when the tuple is empty
    pipe = registry.pipeline("inpaint", controlnet="canny")  # StableDiffusionXLControlNetInpaintPipeline
    images = pipe(prompt, image=..., mask_image=..., control_image=...,
                  generator=registry.generator(seed),
                  callback_on_step_end=registry.step_callback).images   # stops a job past its deadline
    segmenter = registry.cached("segmenter:clothes", lambda: build_it())  # build-once cache for other parts
    registry.check_licence(spec, brand_commercial=brand.commercial)       # LicenceError when refused
    classifier = registry.garment_classifier()  # the optional ONNX garment classifier, or None
"""

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from schemas import AdapterRef

from . import storage
from .config import ModelConfig, ModelSpec
from .errors import JobInputError, JobTimeoutError
from .licences import check_licence

if TYPE_CHECKING:
    from .garment_classifier import GarmentClassifier

logger = logging.getLogger(__name__)

T = TypeVar("T")
Task = Literal["text2img", "img2img", "inpaint"]

# Typed Any: mypy sees diffusers' lazy-import stubs, not the real classes.
_PIPELINE_CLASSES: dict[tuple[Task, bool], Any] = {
    ("text2img", False): StableDiffusionXLPipeline,
    ("img2img", False): StableDiffusionXLImg2ImgPipeline,
    ("inpaint", False): StableDiffusionXLInpaintPipeline,
    ("text2img", True): StableDiffusionXLControlNetPipeline,
    ("img2img", True): StableDiffusionXLControlNetImg2ImgPipeline,
    ("inpaint", True): StableDiffusionXLControlNetInpaintPipeline,
}
_LORA_FILE = "pytorch_lora_weights.safetensors"


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; 'cuda' without a GPU is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("ModelConfig.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on CUDA and float32 on CPU; half precision on CPU is refused (slow, unsupported ops)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and dtype in ("float16", "bfloat16"):
        raise RuntimeError(f"dtype '{dtype}' on CPU is not supported here; use 'float32' or 'auto'")
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


@dataclass(frozen=True)
class _LoadedAdapter:
    internal_name: str
    version: str


class ModelRegistry:
    """The models of one worker process: built once, shared by every recipe, one job at a time."""

    def __init__(self, config: ModelConfig, *, components: Mapping[str, Any] | None = None) -> None:
        """Load the base model now. `components` injects pre-built SDXL parts (the benchmark's random weights)."""
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        check_licence(config.base, config.commercial)
        started = time.perf_counter()
        self._base: Any = self._load_base(components)
        self._qkv_fused = False
        if config.optimise and self.device.type == "cuda":
            self._optimise_base()
        self._pipelines: dict[tuple[Task, str | None], Any] = {}
        self._controlnets: dict[str, Any] = {}
        self._adapters: OrderedDict[str, _LoadedAdapter] = OrderedDict()
        self._lora_enabled = False
        self._active_embeddings: dict[str, tuple[str, ...]] = {}  # trigger word -> the loaded TI tokens for it
        self._cache: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._deadline: float | None = None
        self.load_seconds = time.perf_counter() - started

    # ---- facts for results -------------------------------------------------------------------
    @property
    def is_tiny(self) -> bool:
        return self.config.is_tiny

    @property
    def model_version(self) -> str:
        base = self.config.base
        if base.is_tiny:
            return "tiny-random-sdxl@seed0"
        return f"{base.name}:{base.source}@{base.revision or 'local'}"

    @property
    def controlnet_kinds(self) -> tuple[str, ...]:
        return tuple(self.config.controlnets)

    # ---- loading ---------------------------------------------------------------------------------
    def _load_base(self, components: Mapping[str, Any] | None) -> Any:
        spec = self.config.base
        pipe: Any
        if components is not None:
            pipe = StableDiffusionXLPipeline(**components)
        elif spec.is_tiny:
            from .tiny_models import build_tiny_sdxl_components

            pipe = StableDiffusionXLPipeline(**build_tiny_sdxl_components(seed=0))
        else:
            pipe = StableDiffusionXLPipeline.from_pretrained(spec.source, **self._from_pretrained_kwargs(spec))
        pipe.to(self.device, self.dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _from_pretrained_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        if spec.is_local and not Path(spec.source).exists():
            raise FileNotFoundError(f"model '{spec.name}': local weights not found at {spec.source}")
        kwargs: dict[str, Any] = {
            "torch_dtype": self.dtype,
            "local_files_only": not self.config.allow_downloads,
        }
        for key in ("revision", "variant", "subfolder"):
            if getattr(spec, key) is not None:
                kwargs[key] = getattr(spec, key)
        return kwargs

    def _optimise_base(self) -> None:
        """CUDA only: channels_last convolutions, fused QKV (undone while LoRAs are active), optional compile."""
        pipe = self._base
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        self._fuse_qkv(True)
        if self.config.compile_unet:
            pipe.unet = torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs", fullgraph=True)

    def _fuse_qkv(self, fused: bool) -> None:
        # LoRA layers wrap to_q/to_k/to_v; the fused to_qkv projection would bypass them, so fusion is only
        # on while no adapter is active.
        if not (self.config.optimise and self.device.type == "cuda") or fused == self._qkv_fused:
            return
        if fused:
            self._base.fuse_qkv_projections()
        else:
            self._base.unfuse_qkv_projections()
        self._qkv_fused = fused

    def controlnet(self, kind: str) -> Any:
        """The ControlNet configured for `kind` ('depth', 'canny', 'pose'), loaded on first use."""
        with self._lock:
            if kind in self._controlnets:
                return self._controlnets[kind]
            spec = self.config.controlnets.get(kind)  # type: ignore[call-overload]
            if spec is None:
                raise JobInputError(
                    "params.controlnet",
                    f"no '{kind}' ControlNet is configured; configured: {sorted(self.config.controlnets) or 'none'}",
                )
            check_licence(spec, self.config.commercial)
            model: Any
            if spec.is_tiny:
                from .tiny_models import build_tiny_controlnet

                # A fresh tiny UNet, not the base's: the base may carry LoRA layers by now.
                model = build_tiny_controlnet(seed={"depth": 1, "canny": 2, "pose": 3}.get(kind, 4))
            else:
                model = ControlNetModel.from_pretrained(spec.source, **self._from_pretrained_kwargs(spec))
            model.to(self.device, self.dtype)
            if self.config.optimise and self.device.type == "cuda":
                model.to(memory_format=torch.channels_last)
            self._controlnets[kind] = model
            return model

    def pipeline(self, task: Task, controlnet: str | None = None) -> Any:
        """An SDXL pipeline for `task` sharing the base's weights (and the active LoRAs), cached."""
        with self._lock:
            key = (task, controlnet)
            if key not in self._pipelines:
                cls = _PIPELINE_CLASSES[(task, controlnet is not None)]
                if task == "text2img" and controlnet is None:
                    pipe: Any = self._base
                elif controlnet is None:
                    pipe = cls.from_pipe(self._base)
                else:
                    pipe = cls.from_pipe(self._base, controlnet=self.controlnet(controlnet))
                pipe.set_progress_bar_config(disable=True)
                self._pipelines[key] = pipe
            return self._pipelines[key]

    def cached(self, key: str, factory: Callable[[], T]) -> T:
        """`factory()` once per key for the life of the process (a failed build is not cached)."""
        with self._lock:
            if key not in self._cache:
                self._cache[key] = factory()
            return self._cache[key]

    def check_licence(self, spec: ModelSpec, brand_commercial: bool = False) -> None:
        """Raise LicenceError when the deployment or the brand is commercial and `spec` forbids it."""
        check_licence(spec, self.config.commercial or brand_commercial)

    def garment_classifier(self, brand_commercial: bool = False) -> "GarmentClassifier | None":
        """The configured garment classifier (licence-checked, its session built once), or None without one."""
        spec = self.config.garment_classifier
        if spec is None:
            return None
        self.check_licence(spec, brand_commercial=brand_commercial)
        from .garment_classifier import GarmentClassifier

        device: Literal["cpu", "cuda"] = "cuda" if self.device.type == "cuda" else "cpu"
        return self.cached("garment_classifier", lambda: GarmentClassifier(spec, device))

    # ---- LoRA adapters ------------------------------------------------------------------------
    def use_adapters(self, adapters: Sequence[AdapterRef]) -> dict[str, str]:
        """Activate exactly these LoRAs with their weights (loading any not yet cached); returns name -> version."""
        with self._lock:
            self._active_embeddings = {}
            if not adapters:
                if self._lora_enabled:
                    self._base.disable_lora()
                    self._lora_enabled = False
                self._fuse_qkv(True)
                return {}
            names = [ref.name for ref in adapters]
            if len(set(names)) != len(names):
                raise JobInputError("brand_profile.adapters", f"adapter names must be unique, got {names}")
            self._fuse_qkv(False)
            loaded = [self._load_adapter(ref) for ref in adapters]
            self._evict_adapters(keep={item.internal_name for item in loaded})
            self._base.enable_lora()
            self._base.set_adapters([item.internal_name for item in loaded], [ref.weight for ref in adapters])
            self._lora_enabled = True
            for ref in adapters:
                if ref.embeddings_uri is not None:
                    if not ref.embeddings_token:
                        raise JobInputError(
                            f"brand_profile.adapters.{ref.name}.embeddings_token",
                            "embeddings need the word prompts use for them (the trigger token)",
                        )
                    self._active_embeddings[ref.embeddings_token] = self._load_embeddings(ref)
            return {ref.name: item.version for ref, item in zip(adapters, loaded, strict=True)}

    def with_embedding_tokens(self, prompt: str) -> str:
        """The prompt with each active trigger word replaced by its pivotal-tuning tokens (`<acme_ss27_v4_0>...`)."""
        for word, tokens in self._active_embeddings.items():
            prompt = re.sub(rf"(?<![\w<]){re.escape(word)}(?![\w>])", "".join(tokens), prompt)
        return prompt

    def _load_embeddings(self, ref: AdapterRef) -> tuple[str, ...]:
        """Pivotal tuning's `learned_embeds.safetensors` ({"clip_l": [n, d1], "clip_g": [n, d2]}, the diffusers
        advanced SDXL script's format) loaded once into both text encoders, under tokens unique to this version."""
        uri = str(ref.embeddings_uri)
        field = f"brand_profile.adapters.{ref.name}.embeddings_uri"
        try:
            storage.check(uri)
        except storage.StorageError as error:
            raise JobInputError(field, f"cannot read the embeddings of '{ref.name}': {error}") from error
        cache_key = f"embeddings:{uri}#{ref.version or ''}"
        if cache_key in self._cache:
            tokens: tuple[str, ...] = self._cache[cache_key]
            return tokens
        try:
            local = storage.fetch_to_cache(uri, self.config.lora_cache_dir)
        except (FileNotFoundError, storage.StorageError) as error:
            raise JobInputError(field, f"cannot read the embeddings of '{ref.name}': {error}") from error
        from safetensors.torch import load_file

        embeddings_file = local / "learned_embeds.safetensors" if local.is_dir() else local
        try:
            tensors = load_file(str(embeddings_file))
        except (OSError, ValueError, RuntimeError) as error:
            raise JobInputError(field, f"the embeddings of '{ref.name}' are not a safetensors file") from error
        if set(tensors) != {"clip_l", "clip_g"} or tensors["clip_l"].shape[0] != tensors["clip_g"].shape[0]:
            raise JobInputError(field, f"expected clip_l and clip_g with one row per token, got {sorted(tensors)}")
        stem = re.sub(r"[^A-Za-z0-9_]", "_", f"{ref.name}_{ref.version or _file_digest(embeddings_file)}")[:60]
        tokens = tuple(f"<{stem}_{index}>" for index in range(tensors["clip_l"].shape[0]))
        base = self._base
        # As pivotal tuning added them (gpu_jobs.training.lora.add_pivotal_tokens): new tokens in each tokenizer, their
        # rows in each text encoder's input embeddings. A tokenizer two encoders share gets the tokens once.
        for key, encoder, tokenizer in (
            ("clip_l", base.text_encoder, base.tokenizer),
            ("clip_g", base.text_encoder_2, base.tokenizer_2),
        ):
            table = encoder.get_input_embeddings()
            if tensors[key].shape[1] != table.embedding_dim:
                raise JobInputError(
                    field, f"{key} rows are {tensors[key].shape[1]} wide, the text encoder's {table.embedding_dim}"
                )
            tokenizer.add_tokens([token for token in tokens if token not in tokenizer.get_vocab()])
            ids = tokenizer.convert_tokens_to_ids(list(tokens))
            if max(ids) >= table.num_embeddings:
                encoder.resize_token_embeddings(len(tokenizer))
                table = encoder.get_input_embeddings()
            with torch.no_grad():
                table.weight[ids] = tensors[key].to(table.weight.device, table.weight.dtype)
        logger.info("loaded TI embeddings %s for %s from %s", "".join(tokens), ref.embeddings_token, uri)
        self._cache[cache_key] = tokens
        return tokens

    def _load_adapter(self, ref: AdapterRef) -> _LoadedAdapter:
        field = f"brand_profile.adapters.{ref.name}.uri"
        cache_key = f"{ref.uri}#{ref.version or ''}"
        try:
            # Checked before the cache: an adapter loaded for one job is not thereby readable by the next.
            storage.check(ref.uri)
        except storage.StorageError as error:
            raise JobInputError(field, f"cannot read LoRA '{ref.name}': {error}") from error
        if cache_key in self._adapters:
            self._adapters.move_to_end(cache_key)
            return self._adapters[cache_key]
        try:
            local = storage.fetch_to_cache(ref.uri, self.config.lora_cache_dir)
        except (FileNotFoundError, storage.StorageError) as error:
            raise JobInputError(field, f"cannot read LoRA '{ref.name}': {error}") from error
        weights_file = local / _LORA_FILE if local.is_dir() else local
        if not weights_file.is_file():
            raise JobInputError(field, f"LoRA '{ref.name}': no {_LORA_FILE} in {ref.uri}")
        digest = _file_digest(weights_file)
        version = ref.version or digest
        # The digest keeps two stores' `ss27@v1` apart; the same weights under another URI are loaded once.
        weights_id = digest.removeprefix("sha256-")
        internal_name = re.sub(r"[^A-Za-z0-9_]", "_", f"{ref.name}_{version}")[:60] + f"_{weights_id}"
        same_weights = next((item for item in self._adapters.values() if item.internal_name == internal_name), None)
        if same_weights is not None:
            self._adapters[cache_key] = same_weights
            return same_weights
        try:
            self._base.load_lora_weights(str(weights_file), adapter_name=internal_name)
        except (ValueError, KeyError, RuntimeError, OSError) as error:
            raise JobInputError(field, f"LoRA '{ref.name}' does not fit the base model: {error}") from error
        logger.info("loaded LoRA %s (%s) from %s", ref.name, version, ref.uri)
        item = _LoadedAdapter(internal_name=internal_name, version=version)
        self._adapters[cache_key] = item
        return item

    def _evict_adapters(self, keep: set[str]) -> None:
        while len(self._adapters) > self.config.max_cached_adapters:
            oldest_key = next((key for key, item in self._adapters.items() if item.internal_name not in keep), None)
            if oldest_key is None:
                return
            evicted = self._adapters.pop(oldest_key).internal_name
            if all(item.internal_name != evicted for item in self._adapters.values()):
                self._base.delete_adapters(evicted)

    # ---- per-job helpers --------------------------------------------------------------------------
    def generator(self, seed: int) -> torch.Generator:
        """A CPU generator: the same seed gives the same noise on CPU and on any GPU."""
        return torch.Generator(device="cpu").manual_seed(seed)

    def begin_job(self, timeout_s: float | None = None) -> None:
        """Start the deadline `step_callback` enforces (the worker calls this)."""
        self._deadline = time.monotonic() + (timeout_s or self.config.job_timeout_s)

    def end_job(self) -> None:
        self._deadline = None

    def check_deadline(self) -> None:
        """Raise JobTimeoutError past the current job's deadline; call it between long steps."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise JobTimeoutError("the job ran past its time limit and was stopped")

    def step_callback(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """For diffusers' `callback_on_step_end`: stops the denoising loop past the deadline."""
        self.check_deadline()
        return callback_kwargs


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256-{digest.hexdigest()[:12]}"
