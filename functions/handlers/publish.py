"""After review: approved images -> the output bucket (never over an existing object), rejections -> feedback.

Input: `PublishInput` (the checks' review request and the decisions the review task resumed the execution with).
Approved images go to `approved/<brand>/<sku>/<photo>.<kind>...` with `IfNoneMatch="*"` and their provenance as
metadata; an object already there with the same bytes is a re-run, with other bytes a conflict that is reported,
never replaced. Rejections become one JSON Lines object per review under `feedback/<brand>/`.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import settings
from functions.adapters.aws.clients import client
from functions.adapters.aws.publisher import S3Publisher
from functions.adapters.aws.s3_storage import S3Storage
from functions.adapters.aws.transient import retry_transient
from functions.stages.publish import publish_decisions
from schemas import PublishInput

logger = Logger(service="publish")
tracer = Tracer(service="publish")
metrics = Metrics(namespace="CatalogImages", service="publish")
SETTINGS = settings.PublishSettings


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient  # a throttled S3 read or write: the state machine retries the task (the publisher is idempotent)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings.load(SETTINGS)
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
    return result.model_dump(mode="json")
