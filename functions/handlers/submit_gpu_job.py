"""`.waitForTaskToken` task: one GPU job attempt to the SageMaker asynchronous endpoint.

State machine parameters: `{"task_token.$": "$$.Task.Token", "attempt.$": "$$.State.RetryCount", "job.$": "$",
"execution_arn.$": "$$.Execution.Id"}` where `job` is a JobRequest without the attempt. The attempt number goes
into the job id (the InferenceId) and the output prefix, so a retry is a new job and a duplicate delivery of the
same attempt is not: the job store's conditional put makes `InvokeEndpointAsync` happen once per attempt. The
token is stored server-side (KMS-encrypted table) and returned to nobody, nor echoed by a validation error (pydantic
puts input values in its messages: they are dropped here). A throttle or transient AWS error is raised as
`TransientServiceError`, which the state machine retries; a retry is the same attempt, so nothing is invoked twice.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import InitErrorDetails

from functions.adapters.aws.clients import client
from functions.adapters.aws.job_store import GpuJobStore, Registration
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.gpu_jobs import GpuJobSettings
from functions.adapters.aws.transient import retry_transient
from schemas import GpuJobTask, JobRequest

logger = Logger(service="gpu-jobs")
tracer = tracer_for("gpu-jobs")
metrics = Metrics(namespace="CatalogImages", service="gpu-jobs")
SETTINGS = GpuJobSettings

REQUESTS_PREFIX = "gpu/requests/"


class SubmitRequest(GpuJobTask):
    model_config = ConfigDict(hide_input_in_errors=True)  # the input holds the task token

    task_token: SecretStr = Field(min_length=1, max_length=2048)  # Step Functions tokens run up to 2048 characters


def parse_request(event: dict[str, Any]) -> SubmitRequest:
    """The task's input as a SubmitRequest. A refusal says which fields are wrong and why, never what they held:
    pydantic keeps each input value in the error (`errors()`, `json()`), and the whole event when a field is missing.
    """
    # Plain pydantic, not Powertools' `parse`: for a dict event that is the same validation, and its parser package
    # cost ~15 ms more of every cold start, at the import or at the first request.
    try:
        return SubmitRequest.model_validate(event)
    except ValidationError as error:
        details = [
            InitErrorDetails(type=detail["type"], loc=detail["loc"], input="[redacted]", ctx=detail.get("ctx", {}))
            for detail in error.errors(include_url=False, include_input=False)
        ]
        raise ValidationError.from_exception_data(error.title, details, hide_input=True) from None


def job_for_attempt(job: JobRequest, attempt: int) -> JobRequest:
    """The attempt's own JobRequest: `<job id>-a<n>`, outputs under `<output prefix>/a<n>`."""
    return job.model_copy(
        update={"job_id": f"{job.job_id}-a{attempt}", "output_prefix": f"{job.output_prefix}/a{attempt}"}
    )


def submit(event: SubmitRequest) -> dict[str, Any]:
    config = load(SETTINGS)
    request = job_for_attempt(event.job, event.attempt)
    store = GpuJobStore(client("dynamodb"), config.jobs_table_name)
    s3 = client("s3")

    # 1. The request body lives in S3 (async inference reads it from there). Same job id -> same bytes.
    key = f"{REQUESTS_PREFIX}{request.job_id}.json"
    input_location = f"s3://{config.work_bucket}/{key}"
    s3.put_object(
        Bucket=config.work_bucket, Key=key, Body=request.model_dump_json().encode(), ContentType="application/json"
    )

    # 2. Record the job and its token before invoking, so an outcome can never arrive for an unknown job.
    registration = store.register(
        request.job_id, event.task_token.get_secret_value(), event.execution_arn, input_location
    )
    if registration in (Registration.ALREADY_INVOKED, Registration.ALREADY_SETTLED):
        logger.info("duplicate submission", extra={"job_id": request.job_id, "registration": registration.value})
        metrics.add_metric(name="DuplicateSubmissions", unit=MetricUnit.Count, value=1)
        return {"job_id": request.job_id, "registration": registration.value}

    # 3. Invoke; the InferenceId is our job id, so notifications and results come back under it.
    response = client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=config.endpoint_name,
        InputLocation=input_location,
        ContentType="application/json",
        Accept="application/json",
        InferenceId=request.job_id,
        RequestTTLSeconds=config.request_ttl_seconds,
        InvocationTimeoutSeconds=config.invocation_timeout_seconds,
    )
    store.mark_in_flight(request.job_id, response.get("OutputLocation"), response.get("FailureLocation"))
    metrics.add_metric(name="GpuJobsSubmitted", unit=MetricUnit.Count, value=1)
    logger.info("submitted", extra={"job_id": request.job_id, "kind": request.kind.value})
    return {"job_id": request.job_id, "registration": registration.value}


@logger.inject_lambda_context(log_event=False)  # the event holds the task token
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return submit(parse_request(event))
