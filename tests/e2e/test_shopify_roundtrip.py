"""A product round-trips through a (fake) Shopify store: webhook -> `catalog shopify serve` -> `catalog run --review
local` -> a person approves -> the product shows the new image, once, after a retried delivery and a retried publish.

The store is the loopback fake Admin API (tests/fakes/shopify_admin.py); its CDN serves the merchant's photo to
intake and the attached media back to the test.
"""

import email
import email.policy
import html
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from PIL import Image

from functions.local.synthetic_photos import render_product_photo
from functions.stages.provenance import ALGORITHMICALLY_ENHANCED
from tests import shopify_samples as samples
from tests.fakes.shopify_admin import FakeShopifyStore

CATALOG = Path(sys.executable).with_name("catalog")
IPTC_SOURCE_TYPE = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"


def approve_everything_when_asked(out: Path, errors: list[BaseException]) -> threading.Thread:
    """A reviewer: waits for the emailed link in OUT/outbox, opens the page, approves every image."""

    def review() -> None:
        try:
            outbox = out / "outbox"
            deadline = time.monotonic() + 120
            while not list(outbox.glob("*.eml")):
                if time.monotonic() > deadline:
                    raise TimeoutError("no review email")
                time.sleep(0.1)
            message = email.message_from_bytes(next(outbox.glob("*.eml")).read_bytes(), policy=email.policy.default)
            text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            link = next(line for line in text.splitlines() if line.startswith("http://127.0.0.1:"))
            page = urllib.request.urlopen(link, timeout=60).read().decode()
            fields = {k: html.unescape(v) for k, v in re.findall(r'name="(e|k|s|csrf)" value="([^"]*)"', page)}
            action = re.search(r'<form class="decision" method="post" action="([^"]+)"', page)
            assert action is not None, "no decision form on the review page"
            request = urllib.request.Request(
                urllib.parse.urljoin(link, html.unescape(action.group(1))),
                data=json.dumps({**fields, "approve_all": True}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            urllib.request.urlopen(request, timeout=60).read()
        except BaseException as error:  # reported by the test
            errors.append(error)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread


def catalog_run_with_review(incoming: Path, out: Path, store: FakeShopifyStore) -> str:
    """The run's console output (stdout and stderr)."""
    for stale in (out / "outbox").glob("*.eml"):
        stale.unlink()
    errors: list[BaseException] = []
    reviewer = approve_everything_when_asked(out, errors)
    env = {**os.environ, "SHOPIFY_ADMIN_TOKEN": store.token}  # the token never goes on the command line
    command = [str(CATALOG), "run", str(incoming), "--out", str(out), "--size", "256", "--workers", "1"]
    command += ["--review", "local", "--review-timeout", "120", "--shopify-store", store.url]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    reviewer.join(timeout=10)
    assert not errors, errors
    assert result.returncode == 0, result.stdout + result.stderr
    assert store.token not in result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture
def shop(tmp_path):
    with FakeShopifyStore() as store:
        product = store.add_product("linen-shirt", "Linen shirt", merchant_images=1)
        photo = render_product_photo("tshirt", (170, 40, 50), (238, 238, 236), size=(300, 400), seed=3).image
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=92)
        store.files[store.media_urls(product)[0].rsplit("/", 1)[1]] = buffer.getvalue()  # the merchant's real photo
        yield store, product


def serve_webhooks(out: Path, image_host: str) -> tuple[subprocess.Popen[str], str]:
    command = [str(CATALOG), "shopify", "serve", "--out", str(out), "--port", "0", "--brand", "acme"]
    command += ["--allow-image-host", image_host]
    env = {**os.environ, "SHOPIFY_CLIENT_SECRET": samples.CLIENT_SECRET}
    out.mkdir(parents=True, exist_ok=True)
    with (out / "serve.stderr").open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("Listening on "), line + (out / "serve.stderr").read_text()
    return process, line.removeprefix("Listening on ").strip()


def test_a_webhook_product_round_trips_to_the_store_once(shop, tmp_path):
    store, product = shop
    merchant = [m["id"] for m in product.media]
    shop_dir, results = tmp_path / "shop", tmp_path / "results"

    # Given `catalog shopify serve`, and Shopify delivering the products/create webhook twice (a retried delivery)
    process, endpoint = serve_webhooks(shop_dir, store.url.removeprefix("http://"))
    try:
        body = samples.body_of(store.webhook_product(product))
        answers = [httpx.post(endpoint, content=body, headers=samples.headers(body)) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        photo_folder = shop_dir / "incoming" / "acme" / "linen-shirt"
        deadline = time.monotonic() + 60
        while not [p for p in photo_folder.glob("*.jpg")] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    # Then intake wrote the product's photo once, with its sidecar
    assert len(list(photo_folder.glob("*.jpg"))) == 1 and (photo_folder / "product.json").is_file()

    # When `catalog run --review local` runs with the store configured, and a person approves
    first = catalog_run_with_review(shop_dir / "incoming" / "acme", results, store)

    # Then the product shows its new packshot after the merchant's photo, with the product's title as alt text
    ours = [m for m in product.media if "-cip" in m["image"]["url"]]
    assert [m["id"] for m in product.media[:1]] == merchant and len(ours) == 1
    assert ours[0]["alt"] == "Linen shirt" and "-packshot-cip" in ours[0]["image"]["url"]
    assert f"Shopify {store.url}: 1 attached" in first
    # And the file in the store carries its IPTC source type, like the copy in approved/
    shown = urllib.request.urlopen(ours[0]["image"]["url"], timeout=10).read()
    with Image.open(io.BytesIO(shown)) as image:
        packet = ET.fromstring(image.info["xmp"])
    assert any(e.attrib.get(IPTC_SOURCE_TYPE) == ALGORITHMICALLY_ENHANCED for e in packet.iter())
    approved = next((results / "approved").rglob("*.jpg")).read_bytes()
    assert b"algorithmicallyEnhanced" in approved

    # When Shopify then sends products/update for the product, now showing our image too
    process, endpoint = serve_webhooks(shop_dir, store.url.removeprefix("http://"))
    try:
        body = samples.body_of(store.webhook_product(product))
        update = samples.headers(
            body, topic="products/update", event_id="update-1", triggered_at="2026-11-30T18:00:00.000000000Z"
        )
        assert httpx.post(endpoint, content=body, headers=update).status_code == 200
        intake_log = shop_dir / "shopify" / "intake.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not [
            line for line in intake_log.read_text().splitlines() if '"stage": "intake", "event_id": "update-1"' in line
        ]:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    # Then intake takes in nothing new: our published image is a result, not a product photo
    assert len(list(photo_folder.glob("*.jpg"))) == 1

    # When the publish is retried (the run again, approved again)
    again = catalog_run_with_review(shop_dir / "incoming" / "acme", results, store)

    # Then the store still shows the new image exactly once
    assert len([m for m in product.media if "-cip" in m["image"]["url"]]) == 1 and len(product.media) == 2
    assert "1 already_attached" in again
    lines = [json.loads(line) for line in (results / "shopify" / "published.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["attached", "already_attached"]


def test_sync_backfills_existing_products_without_our_own_media(shop, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from functions.local.cli import app
    from tests.functional.test_shopify_publish import Run, client

    store, product = shop
    # Given an existing product that already shows one image we published, and a product id that is not there
    Run("linen-shirt", kinds=("lifestyle",)).publish(client(store))
    assert len(product.media) == 2
    out = tmp_path / "shop"
    monkeypatch.setenv("SHOPIFY_ADMIN_TOKEN", store.token)
    command = ["shopify", "sync", "--products", f"{product.id.rsplit('/', 1)[1]},no-such-handle", "--shop", store.url]
    command += ["--out", str(out), "--brand", "acme", "--allow-image-host", store.url.removeprefix("http://")]

    # When `catalog shopify sync` runs, twice
    first = CliRunner().invoke(app, command)
    again = CliRunner().invoke(app, command)

    # Then the merchant's photo was taken in once, with its sidecar, and our published image was not
    folder = out / "incoming" / "acme" / "linen-shirt"
    assert [p.suffix for p in folder.glob("*.jpg")] == [".jpg"]
    sidecar = json.loads((folder / "product.json").read_text())
    assert sidecar["sku"] == "linen-shirt" and sidecar["title"] == "Linen shirt" and sidecar["colour"] == "Red"
    # And the missing product is reported by name, which makes the exit status 1
    assert first.exit_code == 1 and "product_not_found" in first.output and "no-such-handle" in first.output
    assert again.exit_code == 1 and len(list(folder.glob("*.jpg"))) == 1
    assert store.token not in first.output
