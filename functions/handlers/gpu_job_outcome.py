"""The async endpoint's SNS success and error notifications -> SendTaskSuccess / SendTaskFailure, idempotently.

Success: the JobResult the container answered is read from `responseParameters.outputLocation`; a result with
`status: failed` fails the task too. Error: `failureReason` becomes the cause. A notification for a job that is
unknown or already settled is acknowledged and dropped, so SNS redeliveries resume nothing twice.
"""

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import job_outcomes
from functions.adapters.aws.clients import client
from functions.adapters.aws.job_store import GpuJobStore
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.gpu_jobs import GpuJobSettings
from functions.adapters.aws.transient import retry_transient

logger = Logger(service="gpu-jobs")
tracer = tracer_for("gpu-jobs")
metrics = Metrics(namespace="CatalogImages", service="gpu-jobs")
SETTINGS = GpuJobSettings

COMPLETED = "Completed"


def handle_notification(message: dict[str, Any]) -> str:
    """Settle the job one notification is about; returns what happened (for logs and tests)."""
    config = load(SETTINGS)
    store = GpuJobStore(client("dynamodb"), config.jobs_table_name)
    job_id = str(message.get("inferenceId") or "")
    job = store.get(job_id) if job_id else None
    if job is None:
        logger.warning("notification for an unknown job", extra={"inference_id": job_id})
        return "unknown"
    sfn = client("stepfunctions")
    response = message.get("responseParameters") or {}
    if message.get("invocationStatus") == COMPLETED and response.get("outputLocation"):
        settled = job_outcomes.succeed_from_location(store, sfn, client("s3"), job, response["outputLocation"])
    else:
        reason = str(message.get("failureReason") or message.get("invocationStatus") or "the endpoint failed")
        settled = job_outcomes.fail(store, sfn, job, job_outcomes.GPU_JOB_FAILED, reason)
    metrics.add_metric(name="GpuJobOutcomes" if settled else "DuplicateOutcomes", unit=MetricUnit.Count, value=1)
    return "settled" if settled else "already_settled"


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient  # SNS retries the notification; settling is idempotent
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    results = [handle_notification(json.loads(record["Sns"]["Message"])) for record in event.get("Records", [])]
    return {"results": results}
