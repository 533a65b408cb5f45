"""SQS batch of S3 events (S3 notifications or EventBridge "Object Created") -> one Step Functions Standard
execution per object version.

Exactly once, twice guarded: a conditional put in the intake ledger (bucket + decoded key + version id / ETag), and
a deterministic execution name from the same key (StartExecution refuses a second execution with that name).
Messages are processed one by one with partial batch failures: a poison message fails alone and, after the
queue's maxReceiveCount, lands in the DLQ; the rest of the batch goes on.
"""

from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import settings
from functions.adapters.aws.clients import client
from functions.adapters.aws.ledger import IntakeLedger
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.s3_events import IntakeObject, objects_in_message, product_location, skip_reason
from functions.adapters.aws.transient import retry_transient
from schemas import ExecutionInput

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

logger = Logger(service="intake")
tracer = tracer_for("intake")
metrics = Metrics(namespace="CatalogImages", service="intake")
SETTINGS = settings.IngestSettings


@cache
def sqs_batch_processor() -> "BatchProcessor":
    """Made on the first batch, not at import: Powertools' batch utility costs ~30 ms of a cold start."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    return BatchProcessor(event_type=EventType.SQS)


def execution_input(obj: IntakeObject, intake_prefix: str) -> ExecutionInput:
    location = product_location(obj.key, intake_prefix)
    assert location is not None  # skip_reason() refused keys without one
    return ExecutionInput(
        bucket=obj.bucket,
        key=obj.key,
        version_id=obj.version_id,
        etag=obj.etag,
        size=obj.size,
        brand=location.brand,
        sku=location.sku,
        filename=location.filename,
        image_id=obj.image_id,
    )


def start_once(obj: IntakeObject) -> str:
    """Start the execution for this object version unless one was started; returns what happened."""
    config = settings.load(SETTINGS)
    reason = skip_reason(obj, config.intake_prefix)
    if reason is not None:
        logger.info("dropped", extra={"key": obj.key, "reason": reason})
        metrics.add_metric(name="ObjectsDropped", unit=MetricUnit.Count, value=1)
        return "dropped"
    ledger = IntakeLedger(client("dynamodb"), config.ledger_table_name)
    if not ledger.claim(obj.ledger_key, obj.execution_name):
        logger.info("duplicate delivery", extra={"key": obj.key, "execution_name": obj.execution_name})
        metrics.add_metric(name="DuplicateDeliveries", unit=MetricUnit.Count, value=1)
        return "duplicate"
    sfn = client("stepfunctions")
    try:
        started = sfn.start_execution(
            stateMachineArn=config.state_machine_arn,
            name=obj.execution_name,
            input=execution_input(obj, config.intake_prefix).model_dump_json(),
        )
        arn = started["executionArn"]
    except sfn.exceptions.ExecutionAlreadyExists:
        # The second guard: an earlier attempt started it but died before marking the ledger.
        arn = f"{config.state_machine_arn.replace(':stateMachine:', ':execution:')}:{obj.execution_name}"
    ledger.mark_started(obj.ledger_key, arn)
    logger.info("execution started", extra={"key": obj.key, "execution_arn": arn})
    metrics.add_metric(name="ExecutionsStarted", unit=MetricUnit.Count, value=1)
    return "started"


@tracer.capture_method
@retry_transient
def record_handler(record: "SQSRecord") -> list[str]:
    return [start_once(obj) for obj in objects_in_message(record.body)]


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import process_partial_response

    settings.load(SETTINGS)  # a missing variable fails the batch here, naming it
    response = process_partial_response(event, record_handler, sqs_batch_processor(), context)
    return dict(response)
