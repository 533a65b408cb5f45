"""Amazon Bedrock image models (Nova Canvas, Titan Image) through boto3 `bedrock-runtime` `InvokeModel`.

Both models take the same body shapes (the Nova Canvas and Titan Image Generator request formats):
- `TEXT_IMAGE`: `textToImageParams` {text, negativeText} from the prompt alone;
- `OUTPAINTING`: `outPaintingParams` {image, maskImage, text, negativeText, outPaintingMode}: the product placed on
  the canvas is `image`, and `maskImage` is black (0,0,0) over the product, the region the model keeps, white around
  it, the region it paints (background replacement);
- `imageGenerationConfig` {numberOfImages, width, height, cfgScale, seed}.
The response is `{"images": [base64 PNG], "error": null}`.

Credentials and region come from the environment (the default boto3 chain); nothing here logs them. Throttling,
content-filter refusals and timeouts are `EngineFailedError`s with their reason, never a crash of the run.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

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

SEED_LIMIT = 2_147_483_646  # Nova Canvas and Titan take seeds 0..2147483646
CONTENT_FILTER_WORDS = ("content filter", "blocked", "responsible ai", "moderation")


def bedrock_runtime_client(read_timeout_s: float = 120.0, max_attempts: int = 3) -> Any:
    """A bedrock-runtime client from the environment: region, credentials and `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`.

    `max_attempts` counts the first call too (botocore's `total_max_attempts`; its `max_attempts` counts retries)."""
    import boto3
    from botocore.config import Config

    config = Config(
        read_timeout=read_timeout_s,
        connect_timeout=10,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )
    return boto3.client("bedrock-runtime", config=config)


def request_body(
    task: GenerationTask, *, text_only: bool, cfg_scale: float = 6.5
) -> tuple[dict[str, Any], Image.Image | None]:
    """The InvokeModel body for one cell, and the placed product (None for TEXT_IMAGE)."""
    config = {
        "numberOfImages": 1,
        "width": task.size,
        "height": task.size,
        "cfgScale": cfg_scale,
        "seed": task.seed % (SEED_LIMIT + 1),
    }
    negative = {"negativeText": task.negative_prompt} if task.negative_prompt else {}
    if text_only:
        return {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": {"text": task.prompt, **negative},
            "imageGenerationConfig": config,
        }, None
    placed = place_product(read_cutout(task.product_path), task.size)
    keep = np.asarray(product_mask(placed)) >= 128
    mask = Image.fromarray(np.where(keep[..., None], 0, 255).repeat(3, axis=2).astype(np.uint8))
    body = {
        "taskType": "OUTPAINTING",
        "outPaintingParams": {
            "image": base64.b64encode(png_bytes(canvas_rgb(placed))).decode("ascii"),
            "maskImage": base64.b64encode(png_bytes(mask)).decode("ascii"),
            "text": task.prompt,
            **negative,
            "outPaintingMode": "PRECISE",
        },
        "imageGenerationConfig": config,
    }
    return body, placed


class BedrockEngine:
    """One Bedrock image model; `text_only` for TEXT_IMAGE, else OUTPAINTING around the product mask."""

    kind = "bedrock"

    def __init__(self, name: str, model_id: str, *, text_only: bool, client: Any = None) -> None:
        if not model_id:
            raise EngineFailedError(
                "bad_request", f"engine {name}: name a model id, e.g. bedrock:amazon.nova-canvas-v1:0"
            )
        self.name = name
        self.model_id = model_id
        self.text_only = text_only
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = bedrock_runtime_client()
        return self._client

    def generate(self, task: GenerationTask) -> EngineOutput:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        body, placed = request_body(task, text_only=self.text_only)
        started = time.perf_counter()
        try:
            response = self.client.invoke_model(
                modelId=self.model_id, body=json.dumps(body), contentType="application/json", accept="application/json"
            )
            payload = json.loads(response["body"].read())
        except (ReadTimeoutError, ConnectTimeoutError) as error:
            raise EngineFailedError(
                "timeout", f"Bedrock {self.model_id} did not answer in time ({type(error).__name__})"
            ) from error
        except EndpointConnectionError as error:
            raise EngineFailedError("unavailable", f"Bedrock endpoint unreachable ({type(error).__name__})") from error
        except ClientError as error:
            raise _failure(self.model_id, error) from error
        except (BotoCoreError, ValueError) as error:
            raise EngineFailedError("error", f"Bedrock {self.model_id}: {type(error).__name__}") from error
        seconds = time.perf_counter() - started
        if payload.get("error"):
            raise _refusal(self.model_id, str(payload["error"]))
        images = payload.get("images") or []
        if not images:
            raise EngineFailedError("error", f"Bedrock {self.model_id} returned no image")
        try:
            image = Image.open(io.BytesIO(base64.b64decode(images[0]))).convert("RGB")
        except (OSError, ValueError) as error:
            raise EngineFailedError("error", f"Bedrock {self.model_id} returned an undecodable image") from error
        return provider_output(image, task, placed, seconds, f"bedrock:{self.model_id}")


def _refusal(model_id: str, message: str) -> EngineFailedError:
    lowered = message.lower()
    if any(word in lowered for word in CONTENT_FILTER_WORDS):
        return EngineFailedError("content_filtered", f"Bedrock {model_id} refused the request: {message[:300]}")
    return EngineFailedError("error", f"Bedrock {model_id}: {message[:300]}")


def _failure(model_id: str, error: Any) -> EngineFailedError:
    code = error.response.get("Error", {}).get("Code", "")
    message = str(error.response.get("Error", {}).get("Message", ""))
    if code in ("ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"):
        return EngineFailedError("throttled", f"Bedrock {model_id} throttled the request ({code})")
    if code == "ModelTimeoutException":
        return EngineFailedError("timeout", f"Bedrock {model_id} timed out ({code})")
    if code == "ValidationException":
        refusal = _refusal(model_id, message)
        return refusal if refusal.reason == "content_filtered" else EngineFailedError("bad_request", refusal.message)
    if code in ("AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"):
        return EngineFailedError("unavailable", f"Bedrock {model_id}: access refused ({code}); check the credentials")
    if code in ("ModelNotReadyException", "ServiceUnavailableException", "ResourceNotFoundException"):
        return EngineFailedError("unavailable", f"Bedrock {model_id}: {code}")
    return EngineFailedError("error", f"Bedrock {model_id}: {code or 'error'}")
