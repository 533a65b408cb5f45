"""Automatic checks after the GPU jobs: every image of the photo becomes a review item with flags for the reviewer.

Input: `ChecksInput` (the prepared image and the GPU jobs' results); output: the `ReviewRequest` the review task
takes. The checks themselves are the stage in functions/stages/checks.py, the same one `catalog run` calls.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws.clients import client
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.s3_storage import S3Storage
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.checks import ChecksSettings
from functions.adapters.aws.transient import retry_transient
from schemas import ChecksInput, ReviewRequest, Severity

logger = Logger(service="checks")
tracer = tracer_for("checks")
metrics = Metrics(namespace="CatalogImages", service="checks")
SETTINGS = ChecksSettings


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient  # a throttled S3 read: the state machine retries the task
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The stage loads Pillow and numpy only when a generated image is to be checked (not for a packshot-only photo).
    from functions.stages.review_items import image_reader, review_items

    config = load(SETTINGS)
    request = ChecksInput.model_validate(event)
    prepared = request.prepared
    read_image = image_reader(S3Storage(client("s3")))
    items = review_items(prepared, request.gpu_results, read_image, config.max_pixel_difference)
    flagged = sum(any(flag.severity is not Severity.INFO for flag in item.flags) for item in items)
    metrics.add_metric(name="ItemsFlagged", unit=MetricUnit.Count, value=flagged)
    logger.info("checked", extra={"image_id": prepared.image_id, "items": len(items), "flagged": flagged})
    review = ReviewRequest(brand=prepared.brand.brand, reviewers=prepared.reviewers, items=tuple(items))
    return review.model_dump(mode="json")
