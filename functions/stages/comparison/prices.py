"""The price table: what one image costs per engine. Defaults below; the user passes an edited JSON or YAML file.

    currency: USD
    per_image:                      # external engines: the provider's list price per image
      bedrock:amazon.nova-canvas-v1:0: 0.04
      openai:gpt-image-1: 0.042
    recipe_per_gpu_hour: 1.41       # our recipes: seconds x this / 3600 (the GPU instance's hourly price)

An engine is priced by its exact name first, then by its model (`bedrock:<id>` for `bedrock-text:<id>` too, and
`openai:<model>` for `openai-text:<model>`); our recipes (`base`, versions, `ti:`, `controlnet:`) by the GPU hour.
An engine the table does not price gets no cost (the report says so) rather than a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# List prices per image at 1024x1024, standard quality, us-east-1, as published when this was written: edit them.
DEFAULT_PER_IMAGE: dict[str, float] = {
    "bedrock:amazon.nova-canvas-v1:0": 0.04,
    "bedrock:amazon.titan-image-generator-v2:0": 0.01,
    "bedrock:amazon.titan-image-generator-v1": 0.01,
    "openai:gpt-image-1": 0.042,
    "openai:dall-e-3": 0.04,
    "openai:dall-e-2": 0.02,
}
DEFAULT_RECIPE_PER_GPU_HOUR = 1.41  # SageMaker ml.g5.xlarge on demand, us-east-1


class PriceTableError(ValueError):
    """A price file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class PriceTable:
    currency: str = "USD"
    per_image: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PER_IMAGE))
    recipe_per_gpu_hour: float | None = DEFAULT_RECIPE_PER_GPU_HOUR
    source: str = "defaults"

    def cost(self, engine: str, kind: str, seconds: float) -> float | None:
        """The cost of one image, or None when the table has no price for the engine."""
        if engine in self.per_image:
            return self.per_image[engine]
        if kind in ("bedrock", "openai"):
            model = engine.split(":", 1)[1] if ":" in engine else engine
            key = f"{kind}:{model}"
            return self.per_image.get(key)
        if kind == "recipe" and self.recipe_per_gpu_hour is not None:
            return round(seconds * self.recipe_per_gpu_hour / 3600.0, 6)
        return None

    @classmethod
    def from_file(cls, path: Path) -> PriceTable:
        """A JSON or YAML price file; its entries replace the defaults of the same name."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise PriceTableError(f"{path}: cannot read the price table ({error.strerror or error})") from error
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                raw = yaml.safe_load(text)
            else:
                raw = json.loads(text)
        except ValueError as error:  # yaml.YAMLError is not a ValueError; caught below
            raise PriceTableError(f"{path}: not valid JSON ({error})") from error
        except Exception as error:
            raise PriceTableError(f"{path}: not valid YAML ({type(error).__name__})") from error
        if not isinstance(raw, dict):
            raise PriceTableError(f"{path}: expected a mapping with currency, per_image, recipe_per_gpu_hour")
        unknown = set(raw) - {"currency", "per_image", "recipe_per_gpu_hour"}
        if unknown:
            raise PriceTableError(f"{path}: unknown field {', '.join(sorted(unknown))}")
        per_image = dict(DEFAULT_PER_IMAGE)
        for name, price in (raw.get("per_image") or {}).items():
            if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                raise PriceTableError(f"{path}: per_image.{name}: must be a number >= 0, got {price!r}")
            per_image[str(name)] = float(price)
        hourly = raw.get("recipe_per_gpu_hour", DEFAULT_RECIPE_PER_GPU_HOUR)
        if hourly is not None and (isinstance(hourly, bool) or not isinstance(hourly, int | float) or hourly < 0):
            raise PriceTableError(f"{path}: recipe_per_gpu_hour: must be a number >= 0 or null, got {hourly!r}")
        currency = raw.get("currency", "USD")
        if not isinstance(currency, str) or not currency:
            raise PriceTableError(f"{path}: currency: must be a code such as USD, got {currency!r}")
        return cls(currency, per_image, None if hourly is None else float(hourly), str(path))
