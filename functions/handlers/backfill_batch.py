"""A bulk backfill's batch (a Distributed Map child, `catalog backfill`): objects already in the intake bucket ->
the normal flow, each started exactly as `ingest` starts an uploaded one.

Per object: HeadObject for its current version id and ETag (a listing has no version id, and the S3 notification
ingest saw carried one, so only the version id gives the same ledger key and execution name), then the shared
`start_once`: the ledger claim and the deterministic execution name. What the ledger holds is skipped, so a stopped or
re-run backfill starts nothing twice. An object that is gone or unreadable fails alone, named in the result; a
throttle fails the batch as `TransientServiceError`, which the Map retries (every start is idempotent).
"""

import math
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from functions.adapters.aws.clients import client
from functions.adapters.aws.intake_start import start_once
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.s3_events import IntakeObject, product_location
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.ingest import BackfillSettings
from functions.adapters.aws.transient import retry_transient, transient_reason
from schemas.backfill import BackfillBatch, BackfillBatchResult, BackfillFailure, BackfillItem

logger = Logger(service="backfill")
tracer = tracer_for("backfill")
metrics = Metrics(namespace="CatalogImages", service="backfill")
SETTINGS = BackfillSettings

# What ingest's start_once answers -> the backfill's count.
_OUTCOMES = {"started": "started", "duplicate": "skipped", "dropped": "dropped"}


def intake_object(s3: Any, bucket: str, item: BackfillItem) -> IntakeObject:
    """The object's current version as an S3 notification would announce it (decoded key, version id, bare ETag)."""
    request = {"Bucket": bucket, "Key": item.key} | ({"VersionId": item.version_id} if item.version_id else {})
    head = s3.head_object(**request)
    return IntakeObject(
        bucket=bucket,
        key=item.key,
        version_id=head.get("VersionId") or None,
        etag=str(head.get("ETag", "")).strip('"') or None,
        size=int(head.get("ContentLength", 0)),
    )


def backfill_item(s3: Any, batch: BackfillBatch, item: BackfillItem, intake_prefix: str) -> str:
    """started | skipped | dropped for one object; a ClientError that is not transient propagates to the caller."""
    location = product_location(item.key, intake_prefix)
    if location is not None and location.brand != batch.batch_input.brand:
        logger.info("dropped", extra={"key": item.key, "reason": f"not brand {batch.batch_input.brand}"})
        return "dropped"
    obj = intake_object(s3, item.bucket or batch.batch_input.bucket, item)
    return _OUTCOMES[start_once(obj)]


@tracer.capture_method
@retry_transient
def backfill(batch: BackfillBatch) -> BackfillBatchResult:
    config = load(SETTINGS)
    s3 = client("s3")
    counts = dict.fromkeys(("started", "skipped", "dropped"), 0)
    failures: list[BackfillFailure] = []
    for item in batch.items:
        try:
            counts[backfill_item(s3, batch, item, config.intake_prefix)] += 1
        except ClientError as error:
            if transient_reason(error) is not None:
                raise  # the whole batch is retried; what it started is in the ledger and is skipped then
            code = error.response.get("Error", {}).get("Code", "error")
            failures.append(BackfillFailure(key=item.key, reason=f"{error.operation_name}: {code}"))
            logger.warning("object failed", extra={"key": item.key, "error": code})
    for name, value in counts.items():
        metrics.add_metric(name=f"Backfill{name.capitalize()}", unit=MetricUnit.Count, value=value)
    return BackfillBatchResult(
        listed=len(batch.items),
        **counts,
        failed=len(failures),
        failures=tuple(failures),
        # The child waits per image it started: MaxConcurrency children at this pace feed the endpoint no faster
        # than it drains (skipped objects cost nothing, so a resumed backfill races through what is done).
        wait_seconds=math.ceil(counts["started"] * config.backfill_seconds_per_image),
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    load(SETTINGS)  # a missing variable fails the batch here, naming it
    result = backfill(BackfillBatch.model_validate(event))
    logger.info("batch done", extra=result.model_dump(include={"listed", "started", "skipped", "dropped", "failed"}))
    return result.model_dump(mode="json")
