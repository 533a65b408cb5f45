"""One intake object version -> its per-image Step Functions execution, started exactly once.

Twice guarded: a conditional put in the intake ledger (bucket + decoded key + version id / ETag), and a deterministic
execution name from the same key (StartExecution refuses a second execution with that name). Shared by `ingest`
(uploads announced by S3) and `backfill_batch` (objects already in the bucket), so both start an image the same way
and the ledger skips what either started before.
"""

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from functions.adapters.aws.clients import client
from functions.adapters.aws.ledger import IntakeLedger
from functions.adapters.aws.s3_events import IntakeObject, product_location, skip_reason
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.ingest import IngestSettings
from schemas import ExecutionInput

logger = Logger(service="intake")
metrics = Metrics(namespace="CatalogImages", service="intake")
SETTINGS = IngestSettings


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
    """Start the execution for this object version unless one was started; returns dropped | duplicate | started."""
    config = load(SETTINGS)
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
