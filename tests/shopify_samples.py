"""Shopify webhook deliveries as Shopify documents them: the products/create sample payload's shape, the headers,
the HMAC (base64 of HMAC-SHA256 of the raw body with the app's client secret) and the EventBridge envelope."""

import base64
import copy
import hashlib
import hmac
import json
from typing import Any

CLIENT_SECRET = "shpss_test_client_secret_current"
PREVIOUS_SECRET = "shpss_test_client_secret_previous"
SHOP = "acme-fashion.myshopify.com"

# The shape of Shopify's documented products/create sample (REST Admin resource), with a Color option.
PRODUCT: dict[str, Any] = {
    "id": 788032119674292922,
    "title": "Example T-Shirt",
    "body_html": "<p>An example T-Shirt</p>",
    "vendor": "Acme",
    "product_type": "Shirts",
    "created_at": "2021-12-31T19:00:00-05:00",
    "handle": "example-t-shirt",
    "updated_at": "2021-12-31T19:00:00-05:00",
    "published_at": "2021-12-31T19:00:00-05:00",
    "template_suffix": None,
    "status": "active",
    "published_scope": "web",
    "tags": "example, mens, t-shirt, collection:Summer 2026",
    "admin_graphql_api_id": "gid://shopify/Product/788032119674292922",
    "variants": [
        {
            "id": 642667041472713922,
            "product_id": 788032119674292922,
            "title": "Small / Navy",
            "price": "19.99",
            "sku": "example-shirt-s-navy",
            "position": 1,
            "inventory_policy": "deny",
            "compare_at_price": "24.99",
            "option1": "Small",
            "option2": "Navy",
            "option3": None,
            "admin_graphql_api_id": "gid://shopify/ProductVariant/642667041472713922",
        },
        {
            "id": 757650484644203962,
            "product_id": 788032119674292922,
            "title": "Medium / Ivory",
            "price": "19.99",
            "sku": "example-shirt-m-ivory",
            "position": 2,
            "option1": "Medium",
            "option2": "Ivory",
            "option3": None,
            "admin_graphql_api_id": "gid://shopify/ProductVariant/757650484644203962",
        },
    ],
    "options": [
        {
            "id": 527050010214937811,
            "product_id": 788032119674292922,
            "name": "Size",
            "position": 1,
            "values": ["Small", "Medium"],
        },
        {
            "id": 527050010214937812,
            "product_id": 788032119674292922,
            "name": "Color",
            "position": 2,
            "values": ["Navy", "Ivory"],
        },
    ],
    "images": [
        {
            "id": 539438707724640965,
            "product_id": 788032119674292922,
            "position": 1,
            "alt": "Front",
            "width": 64,
            "height": 64,
            "src": "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/front.jpg?v=1640995200",
            "variant_ids": [],
            "admin_graphql_api_id": "gid://shopify/ProductImage/539438707724640965",
        }
    ],
    "image": None,
}


def product(**changes: Any) -> dict[str, Any]:
    found = copy.deepcopy(PRODUCT)
    found.update(changes)
    return found


def sign(body: bytes, secret: str = CLIENT_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers(
    body: bytes,
    *,
    topic: str = "products/create",
    event_id: str | None = "b1a5c2d4-0000-4000-8000-000000000001",
    webhook_id: str = "7b0e1e8e-1111-4111-8111-000000000001",
    triggered_at: str = "2026-11-30T10:00:00.000000000Z",
    secret: str | None = CLIENT_SECRET,
) -> dict[str, str]:
    """The headers Shopify sends with an HTTPS delivery."""
    found = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-API-Version": "2026-10",
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Triggered-At": triggered_at,
    }
    if event_id is not None:
        found["X-Shopify-Event-Id"] = event_id
    if secret is not None:
        found["X-Shopify-Hmac-Sha256"] = sign(body, secret)
    return found


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def eventbridge_event(payload: dict[str, Any], **header_changes: Any) -> dict[str, Any]:
    """The same delivery through Shopify's partner event source: the body under detail.payload, the header values
    under detail.metadata, and no HMAC."""
    metadata = headers(b"", secret=None, **header_changes)
    metadata.pop("Content-Type")
    return {
        "version": "0",
        "id": "2f6c6e59-0000-4000-8000-000000000001",
        "detail-type": "shopifyWebhook",
        "source": "aws.partner/shopify.com/1234567/catalog-images",
        "account": "123456789012",
        "time": "2026-11-30T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"payload": payload, "metadata": metadata},
    }
