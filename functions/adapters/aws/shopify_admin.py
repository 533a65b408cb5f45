"""The publish Lambda's way to the store: the Admin token from Secrets Manager, cached for the warm container.

The secret (cdk/catalog_infra/shopify.py, set by the operator) is `{"shop": "<shop>.myshopify.com",
"access_token": "shpat_..."}`. An empty `shop` means no store is connected yet: publishing stops at the output bucket.
Cached for five minutes, so a rotated token is picked up without a redeploy and a burst of executions reads it once.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from functions.stages.publish import ReadBytes
from functions.stages.shopify_publish import publish_to_shopify
from schemas import PublishInput
from schemas.publishing import PublishingProfile, ShopifyPublishResult

CACHE_SECONDS = 300.0
PUBLISHING_PROFILE_NAME = "publishing.json"
_cache: dict[str, tuple[float, "AdminCredentials | None"]] = {}


@dataclass(frozen=True)
class AdminCredentials:
    shop: str
    access_token: str = field(repr=False)  # never in a log line or a traceback's locals repr


def admin_credentials(
    secret_id: str, secrets: Any, clock: Callable[[], float] = time.monotonic
) -> AdminCredentials | None:
    """The shop and token, or None while the secret names no shop. A malformed secret is a ValueError (no value)."""
    cached = _cache.get(secret_id)
    if cached is not None and clock() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        document = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
        shop, token = str(document.get("shop") or "").strip(), str(document.get("access_token") or "")
    except (ValueError, AttributeError, TypeError) as error:
        raise ValueError('the Shopify Admin secret is not {"shop": ..., "access_token": ...} JSON') from error
    credentials = AdminCredentials(shop, token) if shop and token else None
    _cache[secret_id] = (clock(), credentials)
    return credentials


def publishing_profile(brands_uri: str, brand: str, read_bytes: ReadBytes) -> PublishingProfile:
    """`<brands>/<brand>/publishing.json` from the brand store, or the defaults when the brand has none."""
    if not brands_uri:
        return PublishingProfile()
    try:
        data = read_bytes(f"{brands_uri.rstrip('/')}/{brand}/{PUBLISHING_PROFILE_NAME}")
    except FileNotFoundError:
        return PublishingProfile()
    return PublishingProfile.model_validate_json(data)


def publish_to_store(
    request: PublishInput,
    *,
    secret_id: str,
    brands_uri: str,
    secrets: Any,
    read_bytes: ReadBytes,
    max_attempts: int = 4,
) -> ShopifyPublishResult | None:
    """The approved images of one review onto their products; None when no store is connected."""
    from functions.adapters.shopify.admin import ShopifyAdminClient

    credentials = admin_credentials(secret_id, secrets) if secret_id else None
    if credentials is None:
        return None
    profile = publishing_profile(brands_uri, request.review.brand, read_bytes)
    with ShopifyAdminClient(credentials.shop, credentials.access_token, max_attempts=max_attempts) as admin:
        return publish_to_shopify(
            request.review.items, request.outcome.decisions, read_bytes=read_bytes, admin=admin, profile=profile
        )
