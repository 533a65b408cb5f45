"""SQS batch of S3 events (S3 notifications or EventBridge "Object Created") -> one Step Functions Standard
execution per object version, started exactly once (`functions/adapters/aws/intake_start.py`).

Messages are processed one by one with partial batch failures: a poison message fails alone and, after the
queue's maxReceiveCount, lands in the DLQ; the rest of the batch goes on.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws.intake_start import start_once
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.s3_events import objects_in_message
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.ingest import IngestSettings
from functions.adapters.aws.sqs_batch import partial_batch_response
from functions.adapters.aws.transient import retry_transient

logger = Logger(service="intake")
tracer = tracer_for("intake")
metrics = Metrics(namespace="CatalogImages", service="intake")
SETTINGS = IngestSettings


@tracer.capture_method
@retry_transient
def message_handler(body: str) -> list[str]:
    return [start_once(obj) for obj in objects_in_message(body)]


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    load(SETTINGS)  # a missing variable fails the batch here, naming it
    return partial_batch_response(event, message_handler)
