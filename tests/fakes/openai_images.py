"""A loopback OpenAI-compatible Images API: the documented request and response shapes, and its failures.

- `POST /v1/images/generations`, JSON {model, prompt, n, size, [response_format]};
- `POST /v1/images/edits`, multipart {image, mask, prompt, model, n, size, [response_format]}: `mask` is a PNG with an
  alpha channel, the image's size; its fully transparent pixels are where the model paints;
- answers `{"created": <unix time>, "data": [{"b64_json": "<PNG>"}]}`; `gpt-image-*` models refuse `response_format`
  (400 `unknown_parameter`), as the real API does;
- `Authorization: Bearer <key>` or 401 `invalid_api_key`.

Failures are scripted per request (`fake.script("throttle", "content_policy", "timeout")`, then `ok` for the rest):
429 `rate_limit_exceeded`, 400 `content_policy_violation` ("Your request was rejected as a result of our safety
system"), or an answer slower than the client's timeout. Edits keep the opaque (product) pixels exactly and paint the
rest; `move_product` shifts what they keep, as an engine that re-frames the scene would.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from tests.fakes.loopback import serve_posts, stop_serving

API_KEY = "sk-test-loopback"
SIZES = {"256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "auto", "64x64", "128x128"}


@dataclass
class FakeOpenAIImages:
    api_key: str = API_KEY
    slow_answer_s: float = 3.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    move_product: tuple[int, int] = (0, 0)
    _script: deque[str] = field(default_factory=deque)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *answers: str) -> None:
        """The next requests' answers, in order: ok, throttle, content_policy, timeout, server_error."""
        self._script.extend(answers)

    def start(self) -> FakeOpenAIImages:
        self._server = serve_posts(self._handle)
        return self

    def stop(self) -> None:
        stop_serving(self._server)

    # ---- the API ---------------------------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _send_error(handler, 401, "invalid_api_key", "Incorrect API key provided.", "invalid_request_error")
        if handler.path == "/v1/images/generations":
            try:
                fields: dict[str, Any] = json.loads(body)
            except ValueError:
                return _send_error(handler, 400, "invalid_json", "We could not parse the JSON body.")
            files: dict[str, bytes] = {}
        elif handler.path == "/v1/images/edits":
            fields, files = _multipart(handler.headers.get("Content-Type", ""), body)
        else:
            return _send_error(handler, 404, "not_found", f"Invalid URL (POST {handler.path})")
        self.requests.append({"path": handler.path, "fields": fields, "files": sorted(files)})
        problem = _validate(handler.path, fields, files)
        if problem is not None:
            return _send_error(handler, 400, *problem)
        answer = self._script.popleft() if self._script else "ok"
        if answer == "throttle":
            return _send_error(
                handler, 429, "rate_limit_exceeded", "Rate limit reached for images per minute.", "requests"
            )
        if answer == "content_policy":
            return _send_error(
                handler, 400, "content_policy_violation", "Your request was rejected as a result of our safety system."
            )
        if answer == "server_error":
            return _send_error(handler, 500, "server_error", "The server had an error processing your request.")
        if answer == "timeout":
            time.sleep(self.slow_answer_s)
        image = self._paint(fields, files)
        _send_json(handler, 200, {"created": int(time.time()), "data": [{"b64_json": _b64_png(image)}]})

    def _paint(self, fields: dict[str, Any], files: dict[str, bytes]) -> Image.Image:
        width, height = (
            int(side) for side in str(fields.get("size", "1024x1024")).replace("auto", "1024x1024").split("x")
        )
        seed = int.from_bytes(hashlib.sha256(str(fields["prompt"]).encode()).digest()[:4], "big")
        rng = np.random.default_rng(seed + len(self.requests))
        yy, xx = np.mgrid[0:height, 0:width]
        scene = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), np.full_like(xx, 90)], -1)
        scene = np.clip(scene + rng.integers(-20, 20, scene.shape), 0, 255).astype(np.uint8)
        if "image" in files:
            source = np.asarray(Image.open(io.BytesIO(files["image"])).convert("RGB").resize((width, height)))
            mask = np.asarray(Image.open(io.BytesIO(files["mask"])).convert("RGBA").resize((width, height)))
            kept = mask[..., 3] > 0
            dx, dy = self.move_product
            kept, source = np.roll(kept, (dy, dx), (0, 1)), np.roll(source, (dy, dx), (0, 1))
            scene[kept] = source[kept]
        return Image.fromarray(scene)


def _validate(path: str, fields: dict[str, Any], files: dict[str, bytes]) -> tuple[str, str] | None:
    if not isinstance(fields.get("prompt"), str) or not fields["prompt"]:
        return "missing_required_parameter", "Missing required parameter: 'prompt'."
    model = str(fields.get("model", "dall-e-2"))
    if model.startswith("gpt-image") and "response_format" in fields:
        return "unknown_parameter", "Unknown parameter: 'response_format'."
    if str(fields.get("size", "1024x1024")) not in SIZES:
        return "invalid_value", f"Invalid value: '{fields.get('size')}'. Supported values are: {sorted(SIZES)}."
    if path.endswith("/edits"):
        if "image" not in files:
            return "missing_required_parameter", "Missing required parameter: 'image'."
        if "mask" in files:
            image = Image.open(io.BytesIO(files["image"]))
            mask = Image.open(io.BytesIO(files["mask"]))
            if mask.mode != "RGBA":
                return "invalid_image_format", "Invalid mask image format - mask image missing alpha channel."
            if mask.size != image.size:
                return "invalid_value", "The mask and the image must have the same dimensions."
    return None


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        if part.get_filename():
            files[str(name)] = payload
        else:
            fields[str(name)] = payload.decode()
    return fields, files


def _b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout): nothing to answer
        pass


def _send_error(
    handler: BaseHTTPRequestHandler, status: int, code: str, message: str, kind: str = "invalid_request_error"
) -> None:
    _send_json(handler, status, {"error": {"code": code, "message": message, "param": None, "type": kind}})
