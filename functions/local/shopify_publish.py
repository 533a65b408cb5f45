"""`catalog run` -> a Shopify store: the approved images of a decided review onto their products.

Runs after `OUT/approved/` is written. Each image's outcome is appended to `OUT/shopify/published.jsonl`; a failed
one (`shopify_unavailable`, `product_not_found`, `rejected`) stays in `approved/` and `catalog shopify sync` or a
re-run publishes it again without adding what is already there.
"""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from functions.adapters.shopify.admin import ShopifyAdminClient
from functions.local.publishing import PublishingOptions
from functions.review.store import StoredReview
from functions.stages.publish import ReadBytes
from functions.stages.shopify_publish import publish_to_shopify
from schemas.publishing import ShopifyPublishResult

SHOPIFY_LOG = "shopify/published.jsonl"


def record_shopify_result(out_dir: Path, result: ShopifyPublishResult, review_id: str | None) -> None:
    at = datetime.now(UTC).isoformat()
    lines = "".join(
        json.dumps({"at": at, "review_id": review_id, "shop": result.shop, **media.model_dump(mode="json")}) + "\n"
        for media in result.media
    )
    if lines:
        path = out_dir / SHOPIFY_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one write: lines never interleave
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)


def publish_to_store(
    out_dir: Path, review: StoredReview, read_bytes: ReadBytes, publishing: PublishingOptions
) -> ShopifyPublishResult:
    assert publishing.shopify is not None
    with ShopifyAdminClient(publishing.shopify.store, publishing.shopify.token()) as admin:
        result = publish_to_shopify(
            review.task.items,
            review.decisions.values(),
            read_bytes=read_bytes,
            admin=admin,
            profile=publishing.profile,
            c2pa_signing=publishing.c2pa_signing,
        )
    record_shopify_result(out_dir, result, review.review_id)
    return result
