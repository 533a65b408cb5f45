"""The webhook endpoint's checks and the product -> intake step, with Shopify's documented payload shape and HMACs
computed as Shopify documents them."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.adapters.local.files import FileStorage, file_uri
from functions.adapters.local.shopify_store import SQLiteShopifyStore
from functions.stages.shopify_intake import (
    ImageFetcher,
    ImageRefusedError,
    TransientFetchError,
    WebhookRefusedError,
    WebhookSecrets,
    ingest_product,
    receive_webhook,
    sidecar_for,
    work_from_eventbridge,
)
from schemas import GarmentCategory
from schemas.shopify import ShopifyProduct, ShopifySettings, ShopifyWork
from tests import shopify_samples as samples

SECRETS = WebhookSecrets(current=samples.CLIENT_SECRET)
BODY = samples.body_of(samples.PRODUCT)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


class Endpoint:
    """The endpoint as a runtime wires it: a real store (SQLite) and a queue (a list)."""

    def __init__(self, tmp_path, secrets: WebhookSecrets = SECRETS, max_body_bytes: int = 512 * 1024) -> None:
        self.store = SQLiteShopifyStore(tmp_path / "shopify.sqlite3")
        self.queued: list[ShopifyWork] = []
        self.secrets, self.max_body_bytes = secrets, max_body_bytes

    def post(self, body: bytes, headers: dict[str, str], now: datetime = NOW):
        return receive_webhook(
            body,
            headers,
            secrets=self.secrets,
            brand="acme",
            store=self.store,
            enqueue=self.queued.append,
            max_body_bytes=self.max_body_bytes,
            now=now,
        )


@pytest.fixture
def endpoint(tmp_path):
    return Endpoint(tmp_path)


def test_a_signed_products_create_is_acknowledged_and_queued(endpoint):
    # Given Shopify's delivery of a new product, signed with the app's client secret
    answer = endpoint.post(BODY, samples.headers(BODY))

    # Then it is acknowledged and queued once, with the product and the event's headers
    assert (answer.status, answer.outcome) == (200, "queued")
    (work,) = endpoint.queued
    assert work.product.id == samples.PRODUCT["id"] and work.product.handle == "example-t-shirt"
    assert work.event_id == "b1a5c2d4-0000-4000-8000-000000000001"
    assert work.shop_domain == samples.SHOP and work.topic == "products/create"
    assert work.triggered_at == datetime(2026, 11, 30, 10, tzinfo=UTC)


def test_every_single_mutated_byte_of_the_body_is_refused(endpoint):
    # Given a signed body, and every copy of it with exactly one byte changed
    headers = samples.headers(BODY)
    for position in range(len(BODY)):
        mutated = bytearray(BODY)
        mutated[position] ^= 0x01

        # Then each one is refused with 401 and nothing is queued
        answer = endpoint.post(bytes(mutated), headers)
        assert (answer.status, answer.outcome) == (401, "bad_hmac"), position
    assert endpoint.queued == []

    # And the genuine delivery still goes through: the refusals claimed nothing
    assert endpoint.post(BODY, headers).outcome == "queued"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mutation_of_the_body_is_refused(endpoint, data):
    # Given a body changed anywhere: a byte replaced, bytes cut off or appended
    headers = samples.headers(BODY)
    kind = data.draw(st.sampled_from(["replace", "truncate", "append"]))
    if kind == "replace":
        position = data.draw(st.integers(0, len(BODY) - 1))
        value = data.draw(st.integers(0, 255).filter(lambda v: v != BODY[position]))
        mutated = BODY[:position] + bytes([value]) + BODY[position + 1 :]
    elif kind == "truncate":
        mutated = BODY[: data.draw(st.integers(0, len(BODY) - 1))]
    else:
        mutated = BODY + data.draw(st.binary(min_size=1, max_size=32))

    # Then it is refused and nothing is queued
    assert endpoint.post(mutated, headers).status == 401
    assert endpoint.queued == []


@pytest.mark.parametrize("signature", [None, "", "not base64 at all", samples.sign(BODY, "another app's secret")])
def test_a_missing_or_wrong_signature_gets_401_and_changes_nothing(endpoint, signature):
    headers = samples.headers(BODY, secret=None)
    if signature is not None:
        headers["X-Shopify-Hmac-Sha256"] = signature

    answer = endpoint.post(BODY, headers)

    assert (answer.status, answer.outcome) == (401, "bad_hmac")
    assert endpoint.queued == []
    assert endpoint.post(BODY, samples.headers(BODY)).outcome == "queued"


def test_during_a_rotation_the_old_and_new_secrets_are_both_accepted_until_the_overlap_ends(tmp_path):
    # Given a rotation: the new secret is current, the old one accepted until tomorrow
    secrets = WebhookSecrets(
        current=samples.CLIENT_SECRET, previous=samples.PREVIOUS_SECRET, previous_until=NOW + timedelta(days=1)
    )
    endpoint = Endpoint(tmp_path, secrets)
    old = samples.headers(BODY, secret=samples.PREVIOUS_SECRET, event_id="old-secret")
    new = samples.headers(BODY, secret=samples.CLIENT_SECRET, event_id="new-secret")

    # Then both are accepted within the window
    assert endpoint.post(BODY, old).outcome == "queued"
    assert endpoint.post(BODY, new).outcome == "queued"

    # And after it, the old secret is refused
    late = samples.headers(BODY, secret=samples.PREVIOUS_SECRET, event_id="old-secret-late")
    assert endpoint.post(BODY, late, now=NOW + timedelta(days=2)).status == 401


def test_the_secret_document_reads_the_rotation_window():
    secrets = WebhookSecrets.from_document(
        json.dumps({"current": "new", "previous": "old", "previous_until": "2026-12-01T00:00:00Z"})
    )
    assert secrets.accepted(NOW) == ["new", "old"]
    assert secrets.accepted(datetime(2026, 12, 2, tzinfo=UTC)) == ["new"]
    assert WebhookSecrets.from_document(json.dumps({"current": "new", "previous": ""})).accepted(NOW) == ["new"]


def test_an_oversized_body_is_refused_before_anything_else(tmp_path):
    endpoint = Endpoint(tmp_path, max_body_bytes=1024)
    big = samples.body_of(samples.product(body_html="x" * 4096))

    answer = endpoint.post(big, samples.headers(big))

    assert (answer.status, answer.outcome) == (413, "body_too_large")
    assert endpoint.queued == []


def test_an_unknown_topic_is_acknowledged_and_ignored(endpoint):
    # Given a signed delivery of a topic this endpoint does not take
    answer = endpoint.post(BODY, samples.headers(BODY, topic="products/delete"))

    # Then Shopify gets a 200 (no retries, the subscription stays) and nothing is queued, with the reason
    assert (answer.status, answer.outcome) == (200, "unknown_topic")
    assert "products/delete" in answer.detail
    assert endpoint.queued == []


def test_a_signed_body_that_is_not_a_product_is_acknowledged_with_the_field_named(endpoint):
    body = json.dumps({"title": "no id"}).encode()

    answer = endpoint.post(body, samples.headers(body))

    assert (answer.status, answer.outcome) == (200, "invalid_payload")
    assert "id" in answer.detail
    assert endpoint.queued == []


def test_a_repeated_delivery_is_queued_once_and_the_webhook_id_stands_in_for_a_missing_event_id(endpoint):
    # Given the same event delivered twice (Shopify's retry), and another event that has only a webhook id
    first = endpoint.post(BODY, samples.headers(BODY))
    again = endpoint.post(BODY, samples.headers(BODY))
    only_webhook_id = samples.headers(BODY, event_id=None, webhook_id="webhook-only")
    other = endpoint.post(BODY, only_webhook_id)
    other_again = endpoint.post(BODY, only_webhook_id)

    # Then each event is queued once; the repeats are acknowledged as duplicates
    assert [a.outcome for a in (first, again, other, other_again)] == ["queued", "duplicate", "queued", "duplicate"]
    assert [work.event_id for work in endpoint.queued] == ["b1a5c2d4-0000-4000-8000-000000000001", "webhook-only"]


def test_a_failed_enqueue_releases_the_event_so_that_shopifys_retry_gets_through(tmp_path):
    endpoint = Endpoint(tmp_path)

    def broken(work):
        raise ConnectionError("queue unavailable")

    # Given a queue that fails when the first delivery is handed to it
    with pytest.raises(ConnectionError):
        receive_webhook(
            BODY, samples.headers(BODY), secrets=SECRETS, brand="acme", store=endpoint.store, enqueue=broken, now=NOW
        )

    # Then Shopify's retry of the same event is queued, not taken for a duplicate
    assert endpoint.post(BODY, samples.headers(BODY)).outcome == "queued"


def test_a_claim_whose_process_died_before_queueing_is_taken_over_by_a_later_delivery(tmp_path):
    # Given an event claimed by a process that died before it queued the work (never confirmed)
    now = [NOW]
    store = SQLiteShopifyStore(tmp_path / "shopify.sqlite3", clock=lambda: now[0])
    assert store.claim_event("e-1")

    # Then a delivery moments later is a duplicate (the first may still be queueing) ...
    now[0] = NOW + timedelta(seconds=5)
    assert not store.claim_event("e-1")

    # ... and Shopify's retry a few minutes later takes the claim over, so the event is not lost
    now[0] = NOW + timedelta(minutes=5)
    assert store.claim_event("e-1")

    # And once confirmed, no later delivery gets it again
    store.confirm_event("e-1")
    now[0] = NOW + timedelta(hours=3)
    assert not store.claim_event("e-1")


def test_the_eventbridge_envelope_gives_the_same_work_without_an_hmac():
    # Given the product through Shopify's partner event source (topic in the metadata, detail-type generic)
    work = work_from_eventbridge(samples.eventbridge_event(samples.PRODUCT, topic="products/update"), "acme")

    assert work.source == "eventbridge" and work.topic == "products/update"
    assert work.event_id == "b1a5c2d4-0000-4000-8000-000000000001"
    assert work.product.id == samples.PRODUCT["id"] and work.shop_domain == samples.SHOP

    # And an envelope whose detail-type is the topic works too; another topic is refused by name
    event = samples.eventbridge_event(samples.PRODUCT)
    del event["detail"]["metadata"]["X-Shopify-Topic"]
    event["detail-type"] = "products/create"
    assert work_from_eventbridge(event, "acme").topic == "products/create"
    event["detail-type"] = "orders/create"
    with pytest.raises(WebhookRefusedError, match="orders/create"):
        work_from_eventbridge(event, "acme")


def test_the_sidecar_comes_from_the_product_and_the_brands_category_mapping():
    product = ShopifyProduct.model_validate(samples.PRODUCT)

    # Given the default settings: "Shirts" is a top, the colour is the first variant's Color, the collection a tag
    sidecar = sidecar_for(product, ShopifySettings())
    assert sidecar.title == "Example T-Shirt" and sidecar.sku == "example-t-shirt"
    assert sidecar.category == GarmentCategory.TOPS
    assert sidecar.colour == "Navy"
    assert sidecar.collection == "Summer 2026"

    # And a brand that maps its own product types
    mapped = sidecar_for(product, ShopifySettings(category_map={"shirts": GarmentCategory.OUTERWEAR}))
    assert mapped.category == GarmentCategory.OUTERWEAR

    # And one colour, Colour spelled the British way, and no collection tag
    single = ShopifyProduct.model_validate(
        samples.product(options=[{"name": "Colour", "position": 1, "values": ["Olive"]}], tags="basics")
    )
    assert (sidecar_for(single, ShopifySettings()).colour, sidecar_for(single, ShopifySettings()).collection) == (
        "Olive",
        None,
    )


# ---- fetching and intake, over httpx's in-process transport ----------------------------------------------------------
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60 + b"\xff\xd9"


def fetcher(handler, **settings_changes) -> ImageFetcher:
    settings = ShopifySettings(**settings_changes)
    return ImageFetcher(settings, client=httpx.Client(transport=httpx.MockTransport(handler)))


def image_server(images: dict[str, bytes], fetched: list[str]):
    def handler(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        data = images.get(request.url.path)
        if data is None:
            return httpx.Response(404)
        return httpx.Response(200, content=data, headers={"Content-Type": "image/jpeg"})

    return handler


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/s/files/front.jpg",
        "http://cdn.shopify.com/s/files/front.jpg",
        "https://cdn.shopify.com.evil.example/front.jpg",
        "https://cdn.shopify.com:8443/front.jpg",
        "file:///etc/passwd",
    ],
)
def test_only_shopifys_cdn_over_https_is_fetched(url):
    fetched: list[str] = []
    with pytest.raises(ImageRefusedError) as refused:
        fetcher(image_server({}, fetched)).fetch(url, "images[0].src")
    assert refused.value.code == "image_host_not_allowed" and "images[0].src" in str(refused.value)
    assert fetched == []


def test_an_allowed_test_host_is_matched_by_host_and_port():
    images = ImageFetcher(ShopifySettings(), extra_hosts=("127.0.0.1:8123",))
    assert images.allowed("http://127.0.0.1:8123/front.jpg")
    assert not images.allowed("http://127.0.0.1:8124/front.jpg")


def test_fetching_is_bounded_by_size_content_type_and_redirects():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/big":  # no Content-Length: the ceiling is checked while streaming
            return httpx.Response(200, headers={"Content-Type": "image/jpeg"}, content=iter([b"x" * 1024] * 3))
        if request.url.path == "/page":
            return httpx.Response(200, headers={"Content-Type": "text/html"}, content=b"<html>")
        if request.url.path == "/moved":
            return httpx.Response(302, headers={"Location": "https://evil.example.com/x.jpg"})
        if request.url.path == "/busy":
            return httpx.Response(503)
        raise httpx.ReadTimeout("slow", request=request)

    images = fetcher(handler, max_image_bytes=2048)
    cdn = "https://cdn.shopify.com"
    for path, code in (("/big", "image_too_large"), ("/page", "not_an_image"), ("/moved", "image_redirect")):
        with pytest.raises(ImageRefusedError) as refused:
            images.fetch(cdn + path, "images[0].src")
        assert refused.value.code == code
    for path in ("/busy", "/slow"):
        with pytest.raises(TransientFetchError):
            images.fetch(cdn + path, "images[0].src")


@pytest.fixture
def intake(tmp_path):
    store = SQLiteShopifyStore(tmp_path / "state" / "shopify.sqlite3")
    return tmp_path, store, FileStorage([tmp_path])


def _work(payload, event_id="e-1", triggered="2026-11-30T10:00:00Z") -> ShopifyWork:
    body = samples.body_of(payload)
    return work_from_headers(body, samples.headers(body, event_id=event_id, triggered_at=triggered))


def work_from_headers(body: bytes, headers: dict[str, str]) -> ShopifyWork:
    queued: list[ShopifyWork] = []
    store = SQLiteShopifyStore(Path(":memory:"))
    receive_webhook(body, headers, secrets=SECRETS, brand="acme", store=store, enqueue=queued.append, now=NOW)
    return queued[0]


def test_each_image_version_is_written_once_and_a_stale_event_is_ignored(intake):
    root, store, writer = intake
    files = {"/s/files/1/0005/4838/0009/products/front.jpg": JPEG}
    fetched: list[str] = []
    images = fetcher(image_server(files, fetched))

    def run(work):
        return ingest_product(
            work,
            intake_root=file_uri(root / "incoming"),
            store=store,
            writer=writer,
            fetcher=images,
            settings=ShopifySettings(),
        )

    # Given a new product with one image
    first = run(_work(samples.PRODUCT))

    # Then its photo and sidecar land under incoming/<brand>/<handle>/
    folder = root / "incoming" / "acme" / "example-t-shirt"
    photos = sorted(p.name for p in folder.iterdir() if p.name != "product.json")
    assert first.outcome == "processed" and first.counts() == {"written": 1}
    assert len(photos) == 1 and photos[0].startswith("01-539438707724640965-") and photos[0].endswith(".jpg")
    assert json.loads((folder / "product.json").read_text())["colour"] == "Navy"

    # When an update arrives with the same image: nothing is fetched or written again
    again = run(_work(samples.PRODUCT, event_id="e-2", triggered="2026-11-30T11:00:00Z"))
    assert again.counts() == {"already_processed": 1} and len(fetched) == 1

    # When the image's file is replaced (new CDN URL, new bytes): a new version, beside the original
    replaced = samples.product()
    replaced["images"][0]["src"] = replaced["images"][0]["src"].replace("front.jpg?v=1640995200", "front.jpg?v=2")
    files["/s/files/1/0005/4838/0009/products/front.jpg"] = JPEG.replace(b"\x00", b"\x01", 1)
    changed = run(_work(replaced, event_id="e-3", triggered="2026-11-30T12:00:00Z"))
    assert changed.counts() == {"written": 1}
    assert len([p for p in folder.iterdir() if p.name != "product.json"]) == 2

    # When an older event arrives late: acknowledged and ignored
    stale = run(_work(samples.PRODUCT, event_id="e-0", triggered="2026-11-30T09:00:00Z"))
    assert stale.outcome == "stale" and len(fetched) == 2


def test_a_product_without_images_and_a_non_cdn_image_end_in_clear_terminal_states(intake):
    root, store, writer = intake
    fetched: list[str] = []
    images = fetcher(image_server({}, fetched))
    common = dict(
        intake_root=file_uri(root / "incoming"), store=store, writer=writer, fetcher=images, settings=ShopifySettings()
    )

    none = ingest_product(_work(samples.product(images=[]), event_id="a"), **common)
    assert none.outcome == "no_images" and "no images" in none.message

    off_cdn = samples.product(id=1, handle="elsewhere")
    off_cdn["images"][0]["src"] = "https://images.example.com/front.jpg"
    result = ingest_product(_work(off_cdn, event_id="b"), **common)
    (image,) = result.images
    assert (image.status, image.code) == ("refused", "image_host_not_allowed")
    assert "images.example.com" in (image.message or "") and "images[0].src" in (image.message or "")
    assert fetched == []


def test_the_webhook_function_imports_no_image_or_ml_library():
    # Given a fresh interpreter, as a cold Lambda starts
    import subprocess
    import sys

    heavy = ("PIL", "numpy", "torch", "diffusers", "rembg", "cv2", "onnxruntime")
    code = (
        "import sys, functions.handlers.shopify_webhook, functions.handlers.shopify_ingest;"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )

    # When the webhook and intake handlers are imported
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    # Then no image or ML library came with them: the answer stays fast
    assert out.strip() == "[]"


def test_the_local_server_refuses_an_oversized_body_unread_and_answers_only_its_route(tmp_path):
    from functions.adapters.local.shopify_server import LocalShopifyServer

    # Given the loopback endpoint with a 1 KiB body limit
    server = LocalShopifyServer(
        tmp_path, secrets=SECRETS, brand="acme", settings=ShopifySettings(), max_body_bytes=1024
    )
    with server:
        big = samples.body_of(samples.product(body_html="x" * 4096))

        # Then an oversized delivery is refused by its Content-Length, another path is a 404, a GET a 405
        assert httpx.post(server.url, content=big, headers=samples.headers(big), timeout=5).status_code == 413
        assert (
            httpx.post(server.url.replace("/webhooks/shopify", "/other"), content=b"{}", timeout=5).status_code == 404
        )
        assert httpx.get(server.url, timeout=5).status_code == 405

    # And nothing was queued or written
    assert not (tmp_path / "incoming").exists()
