"""GPU-job fixtures: one tiny registry per session, a contract server on a loopback port, tiny inputs.

Jobs read and write only inside a storage scope: every test here runs inside one covering the session's temp
folder and the `jobs` / `brand-models` buckets, and the session's server is given the same.

def test_something(invoke, tmp_path):
    status, body = invoke(job_request_dict(kind="lifestyle", inputs={...}, output_prefix=...))
"""

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gpu_jobs import storage
from gpu_jobs.config import ModelConfig
from gpu_jobs.models import ModelRegistry
from gpu_jobs.serve import JobServer
from gpu_jobs.worker import JobRunner

Invoke = Callable[..., tuple[int, dict[str, Any]]]

TEST_BUCKET = "jobs"  # the bucket the session's job server may use (and brand-models, for the LoRA tests)
CANVAS = 64  # tiny models: 64x64 canvases and 2 steps keep each job well under a second on 2 cores


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """Tiny random SDXL, CPU, built once per test session (its LoRA cache in a temp folder)."""
    return ModelRegistry(ModelConfig.tiny(lora_cache_dir=tmp_path_factory.mktemp("lora-cache")))


@pytest.fixture(scope="session")
def test_scope(tmp_path_factory: pytest.TempPathFactory) -> storage.StorageScope:
    """Where these tests' jobs may read and write: the session's temp folder and the test buckets."""
    return storage.StorageScope.of(roots=[tmp_path_factory.getbasetemp()], buckets=[TEST_BUCKET, "brand-models"])


@pytest.fixture(autouse=True)
def _confined(test_scope: storage.StorageScope) -> Iterator[None]:
    """Recipes and storage called directly from a test run in the test scope (the server installs its own)."""
    with storage.confined(test_scope):
        yield


@pytest.fixture(scope="session")
def job_server(tiny_registry: ModelRegistry, test_scope: storage.StorageScope) -> Iterator[JobServer]:
    """The contract server on 127.0.0.1 (a free port), serving every recipe over the tiny registry."""
    server = JobServer(
        lambda: JobRunner(tiny_registry), host="127.0.0.1", port=0, job_timeout_s=120, scope=test_scope
    ).start()
    assert server.ready.wait(30), server.load_error
    yield server
    server.stop()


def http(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 120) -> tuple[int, Any]:
    """One HTTP exchange with a local server: (status, parsed JSON body)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def invoke(job_server: JobServer) -> Invoke:
    """POST a JobRequest (dict, or raw bytes) to /invocations; returns (status, JSON body)."""

    def post(payload: dict[str, Any] | bytes, server: JobServer | None = None) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return http((server or job_server).port, "POST", "/invocations", body)  # type: ignore[no-any-return]

    return post


def job_request_dict(kind: str, inputs: dict[str, str], output_prefix: Path | str, **fields: Any) -> dict[str, Any]:
    """A valid JobRequest as JSON-ready dict; `fields` override or add (params, seed, variations...)."""
    prefix = output_prefix if isinstance(output_prefix, str) else output_prefix.as_uri()
    return {
        "job_id": fields.pop("job_id", f"job-{uuid.uuid4().hex[:12]}"),
        "kind": kind,
        "brand": "acme",
        "sku": "sku-1",
        "inputs": inputs,
        "output_prefix": prefix,
        **fields,
    }


def write_cutout(path: Path, width: int = 24, height: int = 36, seed: int = 0) -> Path:
    """An RGBA product cutout: textured opaque body, a soft 1-pixel edge, transparent margin around it."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height + 8, width + 8, 4), dtype=np.uint8)
    pixels[..., :3] = rng.integers(0, 256, size=(*pixels.shape[:2], 3), dtype=np.uint8)  # garbage under alpha 0
    pixels[3 : height + 5, 3 : width + 5, 3] = 90  # soft edge
    pixels[4 : height + 4, 4 : width + 4, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def load_rgb(uri: str) -> np.ndarray:
    assert uri.startswith("file://")
    return np.asarray(Image.open(uri.removeprefix("file://")).convert("RGB"))
