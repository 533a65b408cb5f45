"""After review: approved images -> the output bucket (never over an existing object), rejections -> feedback.

Input: `{"review": {"brand", "items": [ReviewItem]}, "outcome": ReviewOutcome}` (the decisions the review task
resumed the execution with). Approved images go to `approved/<brand>/<sku>/<item id><ext>` with
`IfNoneMatch="*"`; an object already there with the same bytes is a re-run, with other bytes a conflict that is
reported, never replaced. Rejections become one JSON Lines object per batch under `feedback/<brand>/`.
"""

import re
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import settings
from functions.aws.clients import client
from functions.aws.job_outcomes import s3_location
from functions.review.publish import feedback_record, put_once
from schemas.review import ReviewItem, ReviewOutcome, Verdict

logger = Logger(service="publish")
tracer = Tracer(service="publish")
metrics = Metrics(namespace="CatalogImages", service="publish")


def _safe(part: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", part).strip("._") or "_"


def publish(brand: str, items: list[ReviewItem], outcome: ReviewOutcome) -> dict[str, Any]:
    config = settings.load(settings.PublishSettings)
    s3 = client("s3")
    by_id = {item.item_id: item for item in items}
    report: dict[str, list[str]] = {"published": [], "already_published": [], "conflicts": [], "rejected": []}
    rejected_lines = []
    for decision in outcome.decisions:
        item = by_id.get(decision.item_id)
        if item is None:
            raise ValueError(f"decision for item {decision.item_id!r}, which is not part of this review")
        if decision.verdict is Verdict.APPROVED:
            source_bucket, source_key = s3_location(item.generated)
            obj = s3.get_object(Bucket=source_bucket, Key=source_key)
            extension = source_key.rsplit(".", 1)[-1] if "." in source_key.rsplit("/", 1)[-1] else "png"
            key = f"{config.approved_prefix}{_safe(brand)}/{_safe(item.sku)}/{_safe(item.item_id)}.{extension}"
            status = put_once(
                s3, config.output_bucket, key, obj["Body"].read(), obj.get("ContentType") or "application/octet-stream"
            )
            report["conflicts" if status == "conflict" else status].append(f"s3://{config.output_bucket}/{key}")
        else:
            rejected_lines.append(feedback_record(outcome.review_id, brand, item, decision).model_dump_json())
            report["rejected"].append(item.item_id)
    if rejected_lines:
        key = f"{config.feedback_prefix}{_safe(brand)}/{_safe(outcome.review_id)}.jsonl"
        status = put_once(
            s3, config.output_bucket, key, ("\n".join(rejected_lines) + "\n").encode(), "application/x-ndjson"
        )
        if status == "conflict":  # other lines are already there for this batch: kept, and reported like an image
            report["conflicts"].append(f"s3://{config.output_bucket}/{key}")
    return {
        **report,
        "published_count": len(report["published"]) + len(report["already_published"]),
        "rejected_count": len(report["rejected"]),
    }


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = ReviewOutcome.model_validate(event["outcome"])
    items = [ReviewItem.model_validate(item) for item in event["review"]["items"]]
    report = publish(event["review"]["brand"], items, outcome)
    metrics.add_metric(name="ImagesPublished", unit=MetricUnit.Count, value=len(report["published"]))
    metrics.add_metric(name="ImagesRejected", unit=MetricUnit.Count, value=report["rejected_count"])
    if report["conflicts"]:
        logger.warning("published objects left alone: different bytes already there", extra=report)
    return report
