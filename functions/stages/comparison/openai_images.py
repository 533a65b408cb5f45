"""An OpenAI-compatible Images API over plain HTTP (httpx): generations, and edits with a mask.

- `POST {OPENAI_BASE_URL}/images/generations`, JSON {model, prompt, n, size}: from the prompt alone;
- `POST {OPENAI_BASE_URL}/images/edits`, multipart {image, mask, prompt, model, n, size}: the product placed on the
  canvas is `image`; `mask` is the same size with the product opaque and everything else fully transparent, the
  region the model paints (background replacement).
Both answer `{"created": ..., "data": [{"b64_json": "..."}]}`. `gpt-image-*` models always answer base64 and take no
`response_format`; other models are asked for `b64_json`. The API takes no seed: the seed only labels the repeat.

`OPENAI_BASE_URL` (default https://api.openai.com/v1) and `OPENAI_API_KEY` come from the environment; the key is
sent as a bearer token and never appears in a message. 429, content-policy refusals and timeouts fail the cell.
"""

from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from PIL import Image

from functions.stages.comparison.engines import (
    EngineFailedError,
    EngineOutput,
    GenerationTask,
    canvas_rgb,
    place_product,
    png_bytes,
    product_mask,
    provider_output,
    read_cutout,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CONTENT_POLICY_CODES = ("content_policy_violation", "moderation_blocked", "content_filter")


@dataclass(frozen=True)
class OpenAIImagesSettings:
    base_url: str
    api_key: str | None
    timeout_s: float = 180.0
    size: str | None = None  # e.g. "1024x1024"; None: the cell's square size

    @classmethod
    def from_environment(cls, timeout_s: float = 180.0) -> OpenAIImagesSettings:
        return cls(
            base_url=os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL).rstrip("/"),
            api_key=os.environ.get("OPENAI_API_KEY") or None,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:  # never the key
        return f"OpenAIImagesSettings(base_url={self.base_url!r}, api_key={'set' if self.api_key else 'unset'})"


class OpenAIImagesEngine:
    """One model behind an OpenAI-compatible Images API; `text_only` for generations, else edits with the mask."""

    kind = "openai"

    def __init__(self, name: str, model: str, settings: OpenAIImagesSettings, *, text_only: bool) -> None:
        if not model:
            raise EngineFailedError("bad_request", f"engine {name}: name a model, e.g. openai:gpt-image-1")
        self.name = name
        self.model = model
        self.settings = settings
        self.text_only = text_only

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}

    def _common(self, task: GenerationTask) -> dict[str, str]:
        fields = {"model": self.model, "prompt": task.prompt, "n": "1", "size": self.settings.size or _size(task)}
        if not self.model.startswith("gpt-image"):
            fields["response_format"] = "b64_json"
        return fields

    def generate(self, task: GenerationTask) -> EngineOutput:
        placed: Image.Image | None = None
        started = time.perf_counter()
        try:
            with httpx.Client(timeout=self.settings.timeout_s, headers=self._headers()) as client:
                if self.text_only:
                    fields: dict[str, Any] = self._common(task)
                    fields["n"] = 1
                    response = client.post(f"{self.settings.base_url}/images/generations", json=fields)
                else:
                    placed = place_product(read_cutout(task.product_path), task.size)
                    keep = np.asarray(product_mask(placed)) >= 128
                    rgba = np.asarray(canvas_rgb(placed).convert("RGBA")).copy()
                    rgba[..., 3] = np.where(keep, 255, 0)  # transparent: the region the model may paint
                    files = {
                        "image": ("image.png", png_bytes(canvas_rgb(placed)), "image/png"),
                        "mask": ("mask.png", png_bytes(Image.fromarray(rgba, "RGBA")), "image/png"),
                    }
                    response = client.post(
                        f"{self.settings.base_url}/images/edits", data=self._common(task), files=files
                    )
        except httpx.TimeoutException as error:
            raise EngineFailedError(
                "timeout", f"{self.name} did not answer within {self.settings.timeout_s:g} s"
            ) from error
        except httpx.HTTPError as error:
            raise EngineFailedError(
                "unavailable", f"{self.name}: {type(error).__name__} reaching the Images API"
            ) from error
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise _failure(self.name, response)
        try:
            data = response.json()["data"]
            image = Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"]))).convert("RGB")
        except (ValueError, KeyError, IndexError, TypeError, OSError) as error:
            raise EngineFailedError("error", f"{self.name}: the answer holds no b64_json image") from error
        return provider_output(image, task, placed, seconds, f"openai:{self.model}", seed_honoured=False)


def _size(task: GenerationTask) -> str:
    return f"{task.size}x{task.size}"


def _failure(name: str, response: httpx.Response) -> EngineFailedError:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    code = str(error.get("code") or error.get("type") or "")
    message = str(error.get("message") or "")[:300]
    if response.status_code == 429:
        return EngineFailedError("throttled", f"{name}: rate limited (429 {code or 'rate_limit_exceeded'})")
    if code in CONTENT_POLICY_CODES or "safety system" in message.lower():
        return EngineFailedError("content_filtered", f"{name} refused the request ({code}): {message}")
    if response.status_code in (408, 504):
        return EngineFailedError("timeout", f"{name}: {response.status_code} from the Images API")
    if response.status_code in (401, 403):
        return EngineFailedError("unavailable", f"{name}: {response.status_code}, check OPENAI_API_KEY")
    if response.status_code >= 500:
        return EngineFailedError("unavailable", f"{name}: {response.status_code} from the Images API")
    return EngineFailedError("bad_request", f"{name}: {response.status_code} {code}: {message}")
