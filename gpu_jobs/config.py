"""Which weights a GPU worker loads, on which device, in which dtype, and under which licence terms.

A deployment writes one JSON file (baked into the image or shipped as the SageMaker model artefact,
`/opt/ml/model/model_config.json`); relative local paths are resolved against that file's folder.

    from gpu_jobs.config import ModelConfig

    config = ModelConfig.from_file("/opt/ml/model/model_config.json")
    config = ModelConfig.tiny()          # `--models tiny`: tiny random models built in-process, CPU, float32

    {
      "commercial": true,
      "dtype": "bfloat16",
      "device": "auto",
      "base": {"name": "sdxl-base", "source": "sdxl-base-1.0", "licence": "openrail++", "commercial_use": true},
      "controlnets": {"canny": {"name": "canny", "source": "controlnet-canny-sdxl", "licence": "openrail++",
                                "commercial_use": true}},
      "segmenters": {"clothes": {"name": "clothes", "source": "segmenters/clothes.onnx", "licence": "mit",
                                 "commercial_use": true, "labels": {"background": 0, "garment": 1}}},
      "garment_classifier": {"name": "garments", "source": "classifiers/garments.onnx", "licence": "apache-2.0",
                             "commercial_use": true, "labels": ["tops", "bottoms", "dresses", "outerwear"]}
    }

`source` is a local folder/file, a Hugging Face id (read from the local HF cache only unless
`allow_downloads` is true: weights are never fetched at request time), or `"tiny"`.
"""

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas import GarmentCategory

TINY_SOURCE = "tiny"

Dtype = Literal["auto", "float16", "bfloat16", "float32"]
Device = Literal["auto", "cuda", "cpu"]
ControlNetKind = Literal["depth", "canny", "pose"]


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ModelSpec(_Config):
    """One set of weights and the licence they come under."""

    name: str = Field(min_length=1, description="Used in errors, versions and the licence gate.")
    source: str = Field(min_length=1, description="Local path, Hugging Face id, or 'tiny'.")
    revision: str | None = None
    variant: str | None = Field(default=None, description="e.g. 'fp16' for diffusers' fp16 weight files.")
    subfolder: str | None = None
    weight_name: str | None = Field(default=None, description="A single weight file inside `source` (IP-Adapter).")
    licence: str = Field(min_length=1, description="SPDX-like id, e.g. 'openrail++', 'apache-2.0', 'cc-by-nc-sa-4.0'.")
    commercial_use: bool

    @property
    def is_tiny(self) -> bool:
        return self.source == TINY_SOURCE

    @property
    def is_local(self) -> bool:
        return self.source.startswith(("/", "./", "../"))


class SegmenterSpec(ModelSpec):
    """An ONNX segmentation net: `labels` maps a label name to the class index the net outputs."""

    labels: dict[str, int] = Field(default_factory=dict)
    input_size: tuple[int, int] | None = Field(default=None, description="(width, height) fed to the net.")


class GarmentClassifierSpec(ModelSpec):
    """An ONNX garment classifier (a local `.onnx` file, never downloaded) that names a garment's category.

    The net takes one `1x3xHxW` float32 input ((rgb/255 - mean)/std, RGB on white where transparent) and gives
    `1xC` logits; `labels` names the C classes in output order. Try-on uses it for a garment whose category is
    `other`, and only when the top class's probability is at least `min_confidence`.
    """

    labels: tuple[GarmentCategory, ...] = Field(min_length=2, description="The output classes, in order.")
    input_size: int = Field(default=224, ge=8, le=1024, description="Side of the square image fed to the net.")
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    min_confidence: float = Field(default=0.6, gt=0.0, le=1.0)

    @field_validator("source")
    @classmethod
    def _local_onnx_file(cls, source: str) -> str:
        if not source.endswith(".onnx"):
            raise ValueError(f"must be a local .onnx file, got {source!r}")
        if not Path(source).is_file():
            raise ValueError(f"no such file: {source} (classifier weights are never downloaded)")
        return source

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: tuple[GarmentCategory, ...]) -> tuple[GarmentCategory, ...]:
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {[label.value for label in labels]}")
        return labels

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(std) <= 0:
            raise ValueError(f"must be positive, got {std}")
        return std


class IPAdapterSpec(ModelSpec):
    """IP-Adapter weights plus the CLIP image encoder they were trained with."""

    image_encoder: ModelSpec | None = None
    scale: float = Field(default=0.7, ge=0.0, le=2.0)


class ModelConfig(_Config):
    """Everything the worker loads. `commercial` turns on the licence gate for every spec."""

    commercial: bool = True
    dtype: Dtype = Field(default="auto", description="'auto': bfloat16 on CUDA, float32 on CPU.")
    device: Device = "auto"
    base: ModelSpec
    controlnets: dict[ControlNetKind, ModelSpec] = Field(default_factory=dict)
    ip_adapter: IPAdapterSpec | None = None
    segmenters: dict[str, SegmenterSpec] = Field(default_factory=dict, description="e.g. 'clothes', 'human_parsing'.")
    try_on_engine: Literal["diffusers", "catvton"] = "diffusers"
    catvton: ModelSpec | None = None
    garment_classifier: GarmentClassifierSpec | None = Field(
        default=None, description="Optional: names the category of a garment that has none (try-on)."
    )
    lora_cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "gpu_jobs" / "lora")
    max_cached_adapters: int = Field(default=16, ge=1, description="LoRAs kept loaded; the least recent is dropped.")
    allow_downloads: bool = Field(default=False, description="Let Hugging Face ids download (never at request time).")
    default_size: int = Field(default=1024, ge=64, le=2048, description="Canvas side when a request names none.")
    default_steps: int = Field(default=30, ge=1, le=150)
    optimise: bool = Field(default=True, description="channels_last, fused QKV and SDPA on CUDA.")
    compile_unet: bool = Field(default=False, description="torch.compile the UNet (slow first job, faster after).")
    job_timeout_s: float = Field(default=900.0, gt=0, description="A job is stopped between steps past this.")

    @property
    def is_tiny(self) -> bool:
        return self.base.is_tiny

    def specs(self) -> list[ModelSpec]:
        """Every spec configured, for the licence report."""
        found: list[ModelSpec] = [self.base, *self.controlnets.values(), *self.segmenters.values()]
        if self.ip_adapter is not None:
            found.append(self.ip_adapter)
            if self.ip_adapter.image_encoder is not None:
                found.append(self.ip_adapter.image_encoder)
        if self.catvton is not None:
            found.append(self.catvton)
        if self.garment_classifier is not None:
            found.append(self.garment_classifier)
        return found

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read a JSON config; relative local sources resolve against the file's folder."""
        path = Path(path)
        raw = json.loads(path.read_text(encoding="utf-8"))
        _resolve_relative_sources(raw, path.resolve().parent)
        return cls.model_validate(raw)

    @classmethod
    def tiny(cls, *, commercial: bool = True, **overrides: object) -> "ModelConfig":
        """The `--models tiny` setting: tiny random models, CPU float32, 2 steps, 128 px canvases."""

        def spec(name: str) -> dict[str, object]:
            return {"name": name, "source": TINY_SOURCE, "licence": "apache-2.0", "commercial_use": True}

        raw: dict[str, object] = {
            "commercial": commercial,
            "dtype": "float32",
            "device": "cpu",
            "base": spec("tiny-sdxl"),
            "controlnets": {"canny": spec("tiny-controlnet-canny"), "depth": spec("tiny-controlnet-depth")},
            "ip_adapter": {**spec("tiny-ip-adapter"), "image_encoder": spec("tiny-image-encoder")},
            "segmenters": {
                "clothes": {**spec("tiny-clothes-segmenter"), "labels": {"background": 0, "garment": 1}},
                "human_parsing": spec("tiny-human-parsing"),
            },
            "default_size": 128,
            "default_steps": 2,
            "optimise": False,
            "job_timeout_s": 300.0,
        }
        raw.update(overrides)
        return cls.model_validate(raw)


def _resolve_relative_sources(node: object, root: Path) -> None:
    """Rewrite `source` values that start with ./ or ../ (or name an existing relative path) to absolute ones."""
    if isinstance(node, dict):
        source = node.get("source")
        if isinstance(source, str) and source != TINY_SOURCE and not source.startswith("/"):
            candidate = root / source
            if source.startswith(("./", "../")) or candidate.exists():
                node["source"] = str(candidate.resolve())
        for value in node.values():
            _resolve_relative_sources(value, root)
    elif isinstance(node, list):
        for value in node:
            _resolve_relative_sources(value, root)
