"""`catalog shopify sync`: existing products (no webhook will ever come for them) read through the Admin API and
turned into the same work item a `products/update` webhook makes, for the same intake.

The product's own images only: media we published (our file names, `-<kind>-cip<hash>`) are left out, or a synced
product would feed its generated images back into the pipeline.
"""

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from functions.stages.shopify_names import is_our_media_url
from functions.stages.shopify_publish import AdminGraphQL
from schemas.shopify import EventSource, ShopifyProduct, ShopifyTopic, ShopifyWork

PRODUCT_FOR_INTAKE = """
query ProductForIntake($id: ID!) {
  product(id: $id) {
    id legacyResourceId handle title productType tags updatedAt
    options { name position values }
    variants(first: 100) { nodes { legacyResourceId sku position selectedOptions { name value } } }
    media(first: 250) { nodes { id alt mediaContentType ... on MediaImage { image { url } } } }
  }
}
"""
PRODUCT_ID_BY_HANDLE = (
    "query ProductIdByHandle($handle: String!) { productByIdentifier(identifier: {handle: $handle}) { id } }"
)
_NUMERIC = re.compile(r"^[0-9]{1,20}$")
_GID = re.compile(r"^gid://shopify/Product/[0-9]{1,20}$")


def product_gid(admin: AdminGraphQL, reference: str) -> str | None:
    """`123`, `gid://shopify/Product/123` or a handle -> the product's gid; None when there is no such product."""
    reference = reference.strip()
    if _NUMERIC.match(reference):
        return f"gid://shopify/Product/{reference}"
    if _GID.match(reference):
        return reference
    found = admin.execute(PRODUCT_ID_BY_HANDLE, {"handle": reference})["productByIdentifier"]
    return found["id"] if found else None


def _numeric(gid: str) -> int:
    return int(gid.rsplit("/", 1)[1])


def _as_webhook_product(product: Mapping[str, Any]) -> ShopifyProduct:
    """The GraphQL product in the REST webhook shape intake reads (variants' options as option1..option3)."""
    variants = [
        {
            "id": int(variant["legacyResourceId"]),
            "sku": variant.get("sku"),
            "position": variant.get("position") or 1,
            **{f"option{i + 1}": o["value"] for i, o in enumerate((variant.get("selectedOptions") or ())[:3])},
        }
        for variant in product["variants"]["nodes"]
    ]
    images = [
        {
            "id": _numeric(media["id"]),
            "src": media["image"]["url"],
            "alt": media.get("alt"),
            "position": position,
            "admin_graphql_api_id": media["id"],
        }
        for position, media in enumerate(
            (m for m in product["media"]["nodes"] if (m.get("image") or {}).get("url")), start=1
        )
        if not is_our_media_url(media["image"]["url"])
    ]
    return ShopifyProduct.model_validate(
        {
            "id": int(product["legacyResourceId"]),
            "title": product["title"],
            "handle": product["handle"],
            "product_type": product.get("productType") or "",
            "tags": product.get("tags") or [],
            "updated_at": product.get("updatedAt"),
            "variants": variants,
            "options": product.get("options") or [],
            "images": images,
            "admin_graphql_api_id": product["id"],
        }
    )


def backfill_work(admin: AdminGraphQL, reference: str, brand: str, shop_domain: str) -> ShopifyWork | None:
    """One existing product as intake's work item; None when the store has no such product."""
    gid = product_gid(admin, reference)
    product = admin.execute(PRODUCT_FOR_INTAKE, {"id": gid})["product"] if gid else None
    if product is None:
        return None
    updated = product.get("updatedAt") or ""
    return ShopifyWork(
        source=EventSource.BACKFILL,
        topic=ShopifyTopic.PRODUCTS_UPDATE,
        event_id=f"sync-{_numeric(product['id'])}-{updated}"[:200],
        shop_domain=shop_domain,
        triggered_at=datetime.fromisoformat(updated) if updated else None,
        api_version=admin.api_version,
        brand=brand,
        product=_as_webhook_product(product),
    )
