"""Shopify products into intake: verify a webhook, queue it once, then fetch the product's new images into
`incoming/<brand>/<handle>/` with a `product.json` built from the product.

Both runtimes call these functions: `catalog shopify serve` (a loopback server, a SQLite store, a worker thread) and
AWS (the webhook Lambda behind API Gateway, DynamoDB, SQS, the intake-queue consumer). The normal flow takes over
from the intake folder or bucket; each new image version gets a file name of its own (image id + content hash) that
is written only if nothing is there, so it is processed once.

Import-light on purpose: the webhook Lambda must answer within a second, so no image library is imported here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from pydantic import ValidationError

from functions.errors import field_problems
from functions.stages.shopify_names import is_our_media_url  # not shopify_publish: the webhook stays light
from schemas import GarmentCategory, ProductSidecar
from schemas.product import SIDECAR_NAME
from schemas.shopify import EventSource, ShopifyImage, ShopifyProduct, ShopifySettings, ShopifyTopic, ShopifyWork

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ImageFetcher",
    "ImageRefusedError",
    "IntakeWriter",
    "ProductIntake",
    "ShopifyIntakeStore",
    "TransientFetchError",
    "WebhookAnswer",
    "WebhookSecrets",
    "image_file_name",
    "ingest_product",
    "product_folder",
    "receive_webhook",
    "sidecar_for",
    "verify_hmac",
    "work_from_eventbridge",
]

DEFAULT_MAX_BODY_BYTES = 512 * 1024  # Shopify's product payloads are a few KiB; API Gateway's own ceiling is 10 MiB
HMAC_HEADER = "X-Shopify-Hmac-Sha256"
TOPIC_HEADER = "X-Shopify-Topic"
SHOP_HEADER = "X-Shopify-Shop-Domain"
EVENT_ID_HEADER = "X-Shopify-Event-Id"
WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
TRIGGERED_AT_HEADER = "X-Shopify-Triggered-At"
API_VERSION_HEADER = "X-Shopify-API-Version"

# Product type words -> category, used when the brand's `category_map` does not name the type. First match wins.
_CATEGORY_WORDS: tuple[tuple[GarmentCategory, tuple[str, ...]], ...] = (
    (GarmentCategory.DRESSES, ("dress", "gown", "jumpsuit")),
    (GarmentCategory.OUTERWEAR, ("jacket", "coat", "parka", "blazer", "gilet", "anorak", "outerwear")),
    (GarmentCategory.SHOES, ("shoe", "sneaker", "trainer", "boot", "sandal", "loafer", "heel", "footwear")),
    (GarmentCategory.BOTTOMS, ("pant", "trouser", "jean", "short", "skirt", "legging", "chino", "bottom")),
    (
        GarmentCategory.TOPS,
        ("shirt", "tee", "top", "blouse", "sweater", "jumper", "hoodie", "sweatshirt", "cardigan", "knit", "polo"),
    ),
    (GarmentCategory.ACCESSORIES, ("bag", "hat", "cap", "scarf", "belt", "jewel", "sock", "glove", "accessor")),
)
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/tiff": ".tif",
    "image/avif": ".avif",
    "image/heic": ".heic",
    "image/heif": ".heic",
}
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._\-]+")


# ---- ports ----------------------------------------------------------------------------------------------------------
class ShopifyIntakeStore(Protocol):
    """Dedupe and staleness, with conditional writes: SQLite locally, DynamoDB on AWS."""

    def claim_event(self, event_id: str) -> bool:
        """True the first time an event id is claimed, or when an earlier claim was never confirmed and is a minute
        old (its process died between the claim and the queue); False for a repeat delivery."""
        ...

    def confirm_event(self, event_id: str) -> None:
        """The event's work is queued (or done): from now on every delivery of it is a duplicate."""
        ...

    def release_event(self, event_id: str) -> None:
        """Forget a claim whose work could not be queued, so that Shopify's retry gets through."""
        ...

    def advance_product(self, product_key: str, triggered_at: datetime) -> bool:
        """Record `triggered_at` as the product's latest event unless a later one was processed (then False)."""
        ...

    def seen(self, key: str) -> bool: ...

    def mark(self, key: str) -> None: ...


class IntakeWriter(Protocol):
    """The intake folder or bucket, write-once: `write_new` never overwrites (False when the name is taken)."""

    def write_new(self, uri: str, data: bytes, content_type: str) -> bool: ...


# ---- the endpoint ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookSecrets:
    """The app's client secret, and during a rotation the previous one until `previous_until` (None: until removed)."""

    current: str
    previous: str | None = None
    previous_until: datetime | None = None

    def accepted(self, now: datetime) -> list[str]:
        keys = [self.current] if self.current else []
        if self.previous and (self.previous_until is None or now < self.previous_until):
            keys.append(self.previous)
        return keys

    @classmethod
    def from_document(cls, text: str) -> WebhookSecrets:
        """`{"current": "...", "previous": "...", "previous_until": "ISO-8601"}` as stored in Secrets Manager."""
        document = json.loads(text)
        until = document.get("previous_until") or None
        return cls(
            current=str(document.get("current") or ""),
            previous=str(document.get("previous") or "") or None,
            previous_until=_parse_time(until) if until else None,
        )


def verify_hmac(raw_body: bytes, signature: str | None, secrets: Iterable[str]) -> bool:
    """Shopify's signature: base64 of HMAC-SHA256 over the raw body with the app's client secret, compared in
    constant time against every accepted secret (all of them, so the time does not tell which one matched)."""
    if not signature:
        return False
    given = signature.strip().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        expected = base64.b64encode(hmac.new(secret.encode(), raw_body, hashlib.sha256).digest())
        matched |= hmac.compare_digest(expected, given)
    return matched


@dataclass(frozen=True)
class WebhookAnswer:
    """What the endpoint answers, and why (`outcome` is a stable code; `detail` never holds a secret)."""

    status: int
    outcome: str
    detail: str
    work: ShopifyWork | None = None


class WebhookRefusedError(ValueError):
    """A delivery that is authentic but cannot be used; `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _parse_time(text: str) -> datetime:
    """ISO-8601 (Shopify's headers) or an HTTP date; always timezone-aware."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        parsed = parsedate_to_datetime(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _work(
    source: EventSource, topic_text: str | None, metadata: Mapping[str, str], payload: Any, brand: str
) -> ShopifyWork:
    try:
        topic = ShopifyTopic(topic_text or "")
    except ValueError:
        raise WebhookRefusedError(
            "unknown_topic", f"topic {topic_text!r} is not one this endpoint takes (products/create, products/update)"
        ) from None
    event_id = _header(metadata, EVENT_ID_HEADER) or _header(metadata, WEBHOOK_ID_HEADER)
    if not event_id:
        raise WebhookRefusedError(
            "missing_event_id", f"neither {EVENT_ID_HEADER} nor {WEBHOOK_ID_HEADER} is present: cannot deduplicate"
        )
    triggered = _header(metadata, TRIGGERED_AT_HEADER)
    try:
        product = ShopifyProduct.model_validate(payload)
        return ShopifyWork(
            source=source,
            topic=topic,
            event_id=event_id,
            shop_domain=_header(metadata, SHOP_HEADER) or "",
            triggered_at=_parse_time(triggered) if triggered else None,
            api_version=_header(metadata, API_VERSION_HEADER),
            brand=brand,
            product=product,
        )
    except ValidationError as error:
        raise WebhookRefusedError(
            "invalid_payload", f"the product payload is not usable: {field_problems(error)}"
        ) from None
    except (ValueError, TypeError) as error:
        raise WebhookRefusedError("invalid_payload", f"{TRIGGERED_AT_HEADER} is not a date: {error}") from None


def receive_webhook(
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: WebhookSecrets,
    brand: str,
    store: ShopifyIntakeStore,
    enqueue: Callable[[ShopifyWork], None],
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    now: datetime | None = None,
) -> WebhookAnswer:
    """One HTTPS delivery: checks only, then the queue. Nothing is fetched here, so the answer comes fast."""
    # 1. size, before anything is parsed
    if len(raw_body) > max_body_bytes:
        return WebhookAnswer(413, "body_too_large", f"body of {len(raw_body)} bytes, over {max_body_bytes}")
    # 2. the signature over the raw bytes: a bad or missing one changes nothing
    if not verify_hmac(raw_body, _header(headers, HMAC_HEADER), secrets.accepted(now or datetime.now(UTC))):
        return WebhookAnswer(401, "bad_hmac", f"{HMAC_HEADER} is missing or does not match")
    # 3. topic, ids and payload. Refusals are acknowledged (200): Shopify would only retry the same bytes, and
    # an endpoint that keeps failing loses its subscription.
    try:
        payload = json.loads(raw_body)
        work = _work(EventSource.HTTPS, _header(headers, TOPIC_HEADER), headers, payload, brand)
    except json.JSONDecodeError as error:
        return WebhookAnswer(200, "invalid_payload", f"the body is not JSON: {error.msg} at {error.pos}")
    except WebhookRefusedError as refused:
        return WebhookAnswer(200, refused.code, str(refused))
    # 4. once per event, then queued
    return _queue_once(work, store, enqueue)


def _queue_once(work: ShopifyWork, store: ShopifyIntakeStore, enqueue: Callable[[ShopifyWork], None]) -> WebhookAnswer:
    if not store.claim_event(work.event_id):
        return WebhookAnswer(200, "duplicate", f"event {work.event_id} was already received", work)
    try:
        enqueue(work)
    except BaseException:
        store.release_event(work.event_id)  # Shopify retries after our 5xx; let that delivery in
        raise
    store.confirm_event(work.event_id)
    return WebhookAnswer(200, "queued", f"product {work.product.id} queued ({work.topic})", work)


def work_from_eventbridge(event: Mapping[str, Any], brand: str) -> ShopifyWork:
    """The same event from Shopify's partner event source: `detail.payload` is the body, `detail.metadata` holds the
    header values; the topic is `X-Shopify-Topic` there, else the `detail-type`. No HMAC: AWS vouches for the source.
    Raises `WebhookRefusedError`."""
    detail = event.get("detail")
    if not isinstance(detail, Mapping) or "payload" not in detail:
        raise WebhookRefusedError("invalid_payload", "EventBridge event without detail.payload")
    metadata = detail.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise WebhookRefusedError("invalid_payload", "EventBridge detail.metadata is not an object")
    metadata = {str(key): str(value) for key, value in metadata.items()}
    topic = _header(metadata, TOPIC_HEADER) or event.get("detail-type")
    return _work(EventSource.EVENTBRIDGE, topic, metadata, detail["payload"], brand)


# ---- the product -> a sidecar and a folder ---------------------------------------------------------------------------
def category_for(product_type: str, settings: ShopifySettings) -> GarmentCategory:
    """The brand's mapping for this exact type (case-insensitive), else the first keyword that matches, else other."""
    wanted = product_type.strip().lower()
    for name, category in settings.category_map.items():
        if name.strip().lower() == wanted:
            return category
    words = re.findall(r"[a-z]+", wanted)
    for category, stems in _CATEGORY_WORDS:
        if any(word.startswith(stem) for word in words for stem in stems):
            return category
    return GarmentCategory.OTHER


def colour_of(product: ShopifyProduct, settings: ShopifySettings) -> str | None:
    """The value of the variant option named Color/Colour: its only value, else the first variant's."""
    names = {name.lower() for name in settings.colour_option_names}
    option = next((o for o in product.options if o.name.strip().lower() in names), None)
    if option is None:
        return None
    if len(option.values) == 1:
        return option.values[0]
    index = max(1, min(option.position, 3))
    first = min(product.variants, key=lambda variant: variant.position, default=None)
    value = getattr(first, f"option{index}", None) if first is not None else None
    return value or (option.values[0] if option.values else None)


def collection_of(product: ShopifyProduct, settings: ShopifySettings) -> str | None:
    prefix = settings.collection_tag_prefix.lower()
    for tag in product.tag_list():
        if tag.lower().startswith(prefix) and tag[len(prefix) :].strip():
            return tag[len(prefix) :].strip()
    return None


def sidecar_for(product: ShopifyProduct, settings: ShopifySettings) -> ProductSidecar:
    colour = colour_of(product, settings)
    collection = collection_of(product, settings)
    return ProductSidecar(
        sku=product_folder(product),
        title=product.title[:500] or None,
        category=category_for(product.product_type, settings),
        colour=colour[:100] if colour else None,
        collection=collection[:200] if collection else None,
        jobs=settings.jobs,
    )


def product_folder(product: ShopifyProduct) -> str:
    """The folder under incoming/<brand>/: the handle, else the first variant's SKU, else `product-<id>`."""
    first_sku = next((variant.sku for variant in product.variants if variant.sku), None)
    for candidate in (product.handle, first_sku):
        name = _UNSAFE_NAME.sub("-", candidate or "").strip(".-")[:128]
        if name:
            return name
    return f"product-{product.id}"


def image_file_name(image: ShopifyImage, digest: str, content_type: str) -> str:
    """`<position>-<image id>-<content hash>.<ext>`: a new name for every new version of an image."""
    extension = _EXTENSIONS.get(content_type) or _extension_from_url(image.src)
    return f"{image.position:02d}-{image.id}-{digest[:16]}{extension}"


def _extension_from_url(url: str) -> str:
    path = urlsplit(url).path.lower()
    for extension in (".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".avif", ".heic"):
        if path.endswith(extension):
            return extension
    return ".img"


# ---- bounded fetching ------------------------------------------------------------------------------------------------
class ImageRefusedError(ValueError):
    """An image that will not be fetched or kept (terminal: retrying would refuse it again)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TransientFetchError(RuntimeError):
    """A fetch that may work later (timeout, 5xx, 429, connection reset): the event is retried."""


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str


class ImageFetcher:
    """HTTPS GETs from the allowed hosts only, with timeouts and a byte ceiling checked while streaming.

    `extra_hosts` (`host:port`, for local testing) are also allowed, over plain HTTP too. Redirects are not followed:
    one could lead off the allowed hosts.
    """

    def __init__(
        self, settings: ShopifySettings, extra_hosts: Sequence[str] = (), client: httpx.Client | None = None
    ) -> None:
        import httpx  # here, not at module level: the webhook function never fetches, and httpx costs its cold start

        self.settings = settings
        self.hosts = {host.lower() for host in settings.image_hosts}
        self.extra = {host.lower() for host in extra_hosts}
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.read_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        )
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)

    def allowed(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and host in self.hosts and port in (None, 443):
            return True
        return parts.scheme in ("http", "https") and f"{host}:{port}" in self.extra

    def fetch(self, url: str, where: str) -> FetchedImage:
        """Bytes and content type of `url`; `where` names the field in error messages."""
        import httpx

        if not self.allowed(url):
            host = urlsplit(url).netloc or url[:80]
            raise ImageRefusedError(
                "image_host_not_allowed",
                f"{where}: {host} is not an allowed image host ({', '.join(sorted(self.hosts | self.extra))}); "
                "only Shopify's CDN is fetched",
            )
        limit = self.settings.max_image_bytes
        deadline = time.monotonic() + self.settings.total_timeout_seconds
        try:
            with self.client.stream("GET", url) as response:
                self._check_status(response, where)
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if not content_type.startswith("image/"):
                    raise ImageRefusedError(
                        "not_an_image", f"{where}: the server sent {content_type or 'no content type'}, not an image"
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _too_large(where, int(declared), limit)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(where, size, limit)
                    if time.monotonic() > deadline:
                        raise TransientFetchError(
                            f"{where}: download took over {self.settings.total_timeout_seconds:g} s"
                        )
                    chunks.append(chunk)
        except httpx.TimeoutException as error:
            raise TransientFetchError(f"{where}: timed out ({type(error).__name__})") from error
        except httpx.TransportError as error:
            raise TransientFetchError(f"{where}: connection failed ({type(error).__name__})") from error
        data = b"".join(chunks)
        if not data:
            raise ImageRefusedError("empty_image", f"{where}: the server sent 0 bytes")
        return FetchedImage(data, content_type)

    @staticmethod
    def _check_status(response: httpx.Response, where: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 429 or status >= 500:
            raise TransientFetchError(f"{where}: HTTP {status}, retried later")
        if 300 <= status < 400:
            raise ImageRefusedError("image_redirect", f"{where}: HTTP {status} redirect, not followed")
        raise ImageRefusedError("image_fetch_failed", f"{where}: HTTP {status}")


def _too_large(where: str, size: int, limit: int) -> ImageRefusedError:
    return ImageRefusedError(
        "image_too_large", f"{where}: over {limit / 2**20:g} MiB ({size / 2**20:.1f} MiB or more), not fetched"
    )


# ---- intake ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageIntake:
    image_id: int
    status: str  # written | already_processed | refused
    uri: str | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class ProductIntake:
    """What intake did with one product event; `outcome` is a stable code."""

    outcome: str  # processed | stale | no_images
    product_id: int
    folder: str | None = None
    images: tuple[ImageIntake, ...] = field(default=())
    message: str = ""
    sidecar_written: bool = False  # False: a product.json from an earlier event was already there

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for image in self.images:
            found[image.status] = found.get(image.status, 0) + 1
        return found


def ingest_product(
    work: ShopifyWork,
    *,
    intake_root: str,
    store: ShopifyIntakeStore,
    writer: IntakeWriter,
    fetcher: ImageFetcher,
    settings: ShopifySettings,
) -> ProductIntake:
    """Write the product's new images (and its sidecar) under `<intake_root>/<brand>/<folder>/`.

    `intake_root` is the intake prefix as a URI (`file:///.../incoming` or `s3://bucket/incoming`). Raises
    `TransientFetchError` when an image may be fetchable later; the images already written stay recorded, so the
    retry adds nothing twice.
    """
    product = work.product
    # 1. a stale event (older than the last one processed for this product) is acknowledged and ignored
    triggered = work.triggered_at or product.updated_at
    if triggered is not None and not store.advance_product(work.product_key, triggered):
        return ProductIntake("stale", product.id, message=f"an event newer than {triggered.isoformat()} was processed")
    # 2. nothing to fetch: a terminal state, not an error
    # Images we published (stages/shopify_publish.py names them) are results, not photos: taking them in would loop.
    photos = [image for image in product.images if not is_our_media_url(image.src)]
    images = sorted(photos, key=lambda image: (image.position, image.id))[: settings.max_images]
    if not images:
        return ProductIntake("no_images", product.id, message=f"product {product.id} has no images")
    folder = f"{intake_root.rstrip('/')}/{work.brand}/{product_folder(product)}"
    # 3. the sidecar first, so that prepare reads it with the first photo. Intake is write-once (the bucket refuses
    # a put under incoming/ without If-None-Match), so the first event's product.json stays; later edits of the
    # title, type or tags do not rewrite it.
    sidecar = sidecar_for(product, settings).model_dump_json(indent=2, exclude_none=True).encode()
    sidecar_written = writer.write_new(f"{folder}/{SIDECAR_NAME}", sidecar, "application/json")
    # 4. each image not yet processed (image id + content hash)
    outcomes = [_ingest_image(work, image, index, folder, store, writer, fetcher) for index, image in enumerate(images)]
    return ProductIntake("processed", product.id, folder, tuple(outcomes), sidecar_written=sidecar_written)


def _ingest_image(
    work: ShopifyWork,
    image: ShopifyImage,
    index: int,
    folder: str,
    store: ShopifyIntakeStore,
    writer: IntakeWriter,
    fetcher: ImageFetcher,
) -> ImageIntake:
    where = f"product {work.product.id} image {image.id} (images[{index}].src)"
    source_key = f"src#{work.product_key}#{image.id}#{hashlib.sha256(image.src.encode()).hexdigest()[:32]}"
    if store.seen(source_key):  # this exact URL was fetched before: Shopify's CDN URLs change with the file
        return ImageIntake(image.id, "already_processed")
    try:
        fetched = fetcher.fetch(image.src, where)
    except ImageRefusedError as refused:
        return ImageIntake(image.id, "refused", code=refused.code, message=str(refused))
    digest = hashlib.sha256(fetched.data).hexdigest()
    version_key = f"image#{work.product_key}#{image.id}#{digest}"
    status = "already_processed"
    uri = f"{folder}/{image_file_name(image, digest, fetched.content_type)}"
    if not store.seen(version_key) and writer.write_new(uri, fetched.data, fetched.content_type):
        status = "written"
    store.mark(version_key)
    store.mark(source_key)
    return ImageIntake(image.id, status, uri=uri)
