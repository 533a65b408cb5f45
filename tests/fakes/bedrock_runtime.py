"""A loopback Amazon Bedrock runtime: `InvokeModel` for Nova Canvas and Titan Image, their documented shapes and
failures. Point boto3 at it with `endpoint_url` (or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`) and dummy credentials.

- `POST /model/<modelId>/invoke` with a SigV4 `Authorization` header and a JSON body:
  `{"taskType": "TEXT_IMAGE", "textToImageParams": {"text", ["negativeText"]}, "imageGenerationConfig": {...}}` or
  `{"taskType": "OUTPAINTING"|"INPAINTING", "outPaintingParams"|"inPaintingParams": {"image", "maskImage"|"maskPrompt",
  "text", ...}, "imageGenerationConfig": {"numberOfImages", "width", "height", "cfgScale", "seed"}}`;
  `maskImage` is black (0,0,0) where the image is kept (outpainting) and white elsewhere;
- answers `{"images": ["<base64 PNG>"], "error": null}`;
- failures (scripted per request: `fake.script("throttle", "content_filter", "timeout")`), the restJson1 way:
  429 `x-amzn-ErrorType: ThrottlingException`, 400 `ValidationException` "This request has been blocked by our content
  filters.", or an answer slower than the client's read timeout. A malformed body is a 400 ValidationException naming
  the field, as the service answers.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import numpy as np
from PIL import Image

from tests.fakes.loopback import serve_posts, stop_serving

MODELS = ("amazon.nova-canvas-v1:0", "amazon.titan-image-generator-v2:0", "amazon.titan-image-generator-v1")
TASKS = {"TEXT_IMAGE": "textToImageParams", "OUTPAINTING": "outPaintingParams", "INPAINTING": "inPaintingParams"}


@dataclass
class FakeBedrockRuntime:
    slow_answer_s: float = 3.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _script: deque[str] = field(default_factory=deque)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *answers: str) -> None:
        """The next requests' answers, in order: ok, throttle, content_filter, timeout."""
        self._script.extend(answers)

    def start(self) -> FakeBedrockRuntime:
        self._server = serve_posts(self._handle)
        return self

    def stop(self) -> None:
        stop_serving(self._server)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if "Credential=" not in handler.headers.get("Authorization", ""):
            return _error(handler, 403, "UnrecognizedClientException", "The security token included is invalid.")
        parts = handler.path.split("/")
        if len(parts) != 4 or parts[1] != "model" or parts[3] != "invoke":
            return _error(handler, 404, "UnknownOperationException", f"no operation at {handler.path}")
        model_id = unquote(parts[2])
        if model_id not in MODELS:
            return _error(handler, 400, "ValidationException", f"The provided model identifier is invalid: {model_id}")
        try:
            request = json.loads(body)
        except ValueError:
            return _error(handler, 400, "ValidationException", "Malformed input request, please reformat your input.")
        self.requests.append({"model_id": model_id, "body": request, "accept": handler.headers.get("Accept")})
        problem = _validate(request)
        if problem is not None:
            return _error(handler, 400, "ValidationException", f"Malformed input request: {problem}")
        answer = self._script.popleft() if self._script else "ok"
        if answer == "throttle":
            return _error(handler, 429, "ThrottlingException", "Too many requests, please wait before trying again.")
        if answer == "content_filter":
            return _error(handler, 400, "ValidationException", "This request has been blocked by our content filters.")
        if answer == "timeout":
            time.sleep(self.slow_answer_s)
        _send(handler, 200, {"images": [_b64_png(_paint(request))], "error": None}, {})


def _validate(request: dict[str, Any]) -> str | None:
    task = request.get("taskType")
    if task not in TASKS:
        return f"#/taskType: {task!r} is not one of {sorted(TASKS)}"
    params = request.get(TASKS[task])
    if not isinstance(params, dict):
        return f"#/{TASKS[task]}: required for {task}"
    if not isinstance(params.get("text"), str) or not params["text"]:
        return f"#/{TASKS[task]}/text: expected a non-empty string"
    config = request.get("imageGenerationConfig") or {}
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or not 0 <= seed <= 2_147_483_646:
        return "#/imageGenerationConfig/seed: must be 0..2147483646"
    if task != "TEXT_IMAGE":
        if "image" not in params:
            return f"#/{TASKS[task]}/image: required"
        if ("maskImage" in params) == ("maskPrompt" in params):
            return f"#/{TASKS[task]}: exactly one of maskImage and maskPrompt"
        image = Image.open(io.BytesIO(base64.b64decode(params["image"])))
        if "maskImage" in params and Image.open(io.BytesIO(base64.b64decode(params["maskImage"]))).size != image.size:
            return f"#/{TASKS[task]}/maskImage: must be the image's size"
    return None


def _paint(request: dict[str, Any]) -> Image.Image:
    config = request.get("imageGenerationConfig") or {}
    width, height = int(config.get("width", 1024)), int(config.get("height", 1024))
    rng = np.random.default_rng(int(config.get("seed", 0)))
    scene = rng.integers(40, 220, (height, width, 3)).astype(np.uint8)
    params = request.get(TASKS[request["taskType"]]) or {}
    if request["taskType"] == "OUTPAINTING" and "maskImage" in params:
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(params["image"]))).convert("RGB"))
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(params["maskImage"]))).convert("L"))
        kept = mask < 128  # black: the region outpainting keeps
        scene[kept] = image[kept]
    return Image.fromarray(scene)


def _b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _error(handler: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
    _send(handler, status, {"message": message}, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/"})


def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
    data = json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
