"""`catalog shopify serve` end to end: the CLI's loopback endpoint takes a signed products/create, acknowledges it at
once, and its worker fetches the product's image from a loopback image host into OUT/incoming/<brand>/<handle>/."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests import shopify_samples as samples

PHOTO_PATH = "/s/files/1/0005/4838/0009/products/front.png"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 60, 120)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    """A loopback stand-in for Shopify's CDN: serves one PNG, counts the requests."""
    data = _png()

    class Handler(BaseHTTPRequestHandler):
        requests = 0

        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            Handler.requests += 1
            if self.path.split("?")[0] != PHOTO_PATH:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, image_host: str) -> Iterator[tuple[str, Path]]:
    """One server for the module (the CLI takes ~2 s to start); each test posts its own product."""
    script = Path(sys.executable).with_name("catalog")
    out = tmp_path_factory.mktemp("shopify-serve") / "out"
    command = [str(script) if script.exists() else "catalog", "shopify", "serve", "--out", str(out), "--port", "0"]
    command += ["--brand", "acme", "--allow-image-host", image_host]
    env = {**os.environ, "SHOPIFY_CLIENT_SECRET": samples.CLIENT_SECRET}  # not on the command line: ps shows it
    errors = out.parent / "serve.stderr"  # a file, not a pipe: the server's console lines must never block it
    with errors.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Listening on "), line + errors.read_text()
        yield line.removeprefix("Listening on ").strip(), out
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, errors.read_text()


def _photos(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*") if p.name != "product.json" and not p.name.startswith("."))


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_webhook_lands_the_products_photo_and_sidecar_under_incoming(serve, image_host):
    url, out = serve
    payload = samples.product()
    payload["images"][0]["src"] = f"http://{image_host}{PHOTO_PATH}?v=1"
    body = samples.body_of(payload)

    # When Shopify delivers the new product, signed with the app's secret
    started = time.monotonic()
    answer = httpx.post(url, content=body, headers=samples.headers(body), timeout=5)
    elapsed = time.monotonic() - started

    # Then it is acknowledged at once (the work is queued, not done in the request)
    assert answer.status_code == 200 and answer.json()["outcome"] == "queued"
    assert elapsed < 1.0

    # And the photo and a product.json land under OUT/incoming/<brand>/<handle>/
    folder = out / "incoming" / "acme" / "example-t-shirt"
    assert _wait_for(lambda: len(_photos(folder)) == 1), (out / "shopify" / "intake.jsonl").read_text()
    (photo,) = _photos(folder)
    assert photo.startswith("01-539438707724640965-") and photo.endswith(".png")
    with Image.open(folder / photo) as image:
        assert image.size == (64, 64)
    sidecar = json.loads((folder / "product.json").read_text())
    assert sidecar == {
        "sku": "example-t-shirt",
        "title": "Example T-Shirt",
        "category": "tops",
        "colour": "Navy",
        "collection": "Summer 2026",
        "jobs": ["packshot"],
    }

    # And `catalog run OUT/incoming/<brand>` finds it as one SKU with its sidecar
    from functions.local.discovery import discover_inputs

    (found,) = discover_inputs(out / "incoming" / "acme")
    assert (found.sku, found.path.name, found.sidecar_error) == ("example-t-shirt", photo, None)
    assert found.sidecar is not None and found.sidecar.colour == "Navy"

    # When the same delivery is retried, and a tampered copy arrives
    again = httpx.post(url, content=body, headers=samples.headers(body), timeout=5)
    tampered = httpx.post(url, content=body.replace(b"Example", b"Exampl3"), headers=samples.headers(body), timeout=5)

    # Then the retry is a duplicate, the tampered copy is refused, and nothing is added
    assert again.json()["outcome"] == "duplicate"
    assert tampered.status_code == 401
    log = [json.loads(line) for line in (out / "shopify" / "intake.jsonl").read_text().splitlines()]
    intake = [line["outcome"] for line in log if line["stage"] == "intake" and line["product_id"] == payload["id"]]
    assert intake == ["processed"]
    assert _photos(folder) == [photo]


def test_an_image_off_the_allowed_hosts_is_refused_with_the_reason_logged(serve):
    url, out = serve
    payload = samples.product(id=42, handle="off-cdn")
    payload["images"][0]["src"] = "https://images.example.com/front.jpg"
    body = samples.body_of(payload)

    headers = samples.headers(body, event_id="off-cdn-event")
    assert httpx.post(url, content=body, headers=headers, timeout=5).json()["outcome"] == "queued"

    log_path = out / "shopify" / "intake.jsonl"

    def intake_lines() -> list[dict]:
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        found = [json.loads(line) for line in lines]
        return [line for line in found if line["stage"] == "intake" and line["product_id"] == 42]

    assert _wait_for(lambda: len(intake_lines()) == 1)
    (line,) = intake_lines()
    assert line["images"] == {"refused": 1}
    assert line["refused"][0]["code"] == "image_host_not_allowed"
    assert "images.example.com" in line["refused"][0]["detail"]
    assert _photos(out / "incoming" / "acme" / "off-cdn") == []
