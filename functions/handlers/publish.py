"""After review: approved images -> the output bucket (never over an existing object), rejections -> feedback.

Input: `PublishInput` (the checks' review request and the decisions the review task resumed the execution with).
Approved images go to `approved/<brand>/<sku>/<photo>.<kind>...` with `IfNoneMatch="*"` and their provenance as
metadata; an object already there with the same bytes is a re-run, with other bytes a conflict that is reported,
never replaced. Rejections become one JSON Lines object per review under `feedback/<brand>/`.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws.clients import client
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.publisher import S3Publisher
from functions.adapters.aws.s3_storage import S3Storage
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.publish import PublishSettings
from functions.adapters.aws.transient import retry_transient
from functions.stages.publish import publish_decisions
from schemas import PublishInput
from schemas.publishing import ShopifyMediaStatus

logger = Logger(service="publish")
tracer = tracer_for("publish")
metrics = Metrics(namespace="CatalogImages", service="publish")
SETTINGS = PublishSettings


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient  # a throttled S3 read or write: the state machine retries the task (the publisher is idempotent)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = load(SETTINGS)
    request = PublishInput.model_validate(event)
    s3 = client("s3")
    result = publish_decisions(
        request.review.brand,
        request.outcome.review_id,
        request.review.items,
        request.outcome.decisions,
        read_bytes=S3Storage(s3).read_bytes,
        publisher=S3Publisher(s3, config.output_bucket, config.approved_prefix, config.feedback_prefix),
    )
    metrics.add_metric(name="ImagesPublished", unit=MetricUnit.Count, value=len(result.published))
    metrics.add_metric(name="ImagesRejected", unit=MetricUnit.Count, value=result.rejected_count)
    if result.conflicts:
        logger.warning("published objects left alone: different bytes already there", extra={"conflicts": result})
    # Then the store, when one is connected: after the bucket, which keeps every approved image whatever Shopify says.
    shop = None
    if config.shopify_admin_secret_id:
        # Imported here: only deployments with a store publish to Shopify, and the rest need not load the stage.
        from functions.adapters.aws.shopify_admin import publish_to_store

        shop = publish_to_store(
            request,
            secret_id=config.shopify_admin_secret_id,
            brands_uri=config.brands_uri,
            secrets=client("secretsmanager"),
            read_bytes=S3Storage(s3).read_bytes,
        )
    if shop is None:
        return result.model_dump(mode="json")
    for status in ShopifyMediaStatus:
        metrics.add_metric(name=f"ShopifyMedia_{status.value}", unit=MetricUnit.Count, value=shop.count(status))
    # Terminal per image; the images stay in the output bucket for `catalog shopify sync` or a re-run.
    if failed := shop.not_on_store():
        logger.warning("images not on their Shopify product", extra={"shopify": [m.model_dump() for m in failed]})
    return {**result.model_dump(mode="json"), "shopify": shop.model_dump(mode="json")}
