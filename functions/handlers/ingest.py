"""SQS batch of S3 events (S3 notifications or EventBridge "Object Created") -> one Step Functions Standard
execution per object version, started exactly once (`functions/adapters/aws/intake_start.py`).

Messages are processed one by one with partial batch failures: a poison message fails alone and, after the
queue's maxReceiveCount, lands in the DLQ; the rest of the batch goes on.
"""

from typing import Any

# Powertools' batch utility first, before anything imports pydantic: imported after pydantic it also builds its
# pydantic parser models (it looks in sys.modules), ~60 ms more of a cold start, which this handler never uses.
# It serves every invocation, so it is not deferred: the first batch would pay that cost instead.
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response  # isort: skip
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import settings
from functions.adapters.aws.intake_start import start_once
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.s3_events import objects_in_message
from functions.adapters.aws.transient import retry_transient

logger = Logger(service="intake")
tracer = tracer_for("intake")
metrics = Metrics(namespace="CatalogImages", service="intake")
SETTINGS = settings.IngestSettings
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
@retry_transient
def record_handler(record: SQSRecord) -> list[str]:
    return [start_once(obj) for obj in objects_in_message(record.body)]


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings.load(SETTINGS)  # a missing variable fails the batch here, naming it
    response = process_partial_response(event, record_handler, processor, context)
    return dict(response)
