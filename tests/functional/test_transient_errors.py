"""Throttles inside a task become ONE error name the state machine retries (TransientServiceError), and the submit
task never echoes its task token in a refusal. (`tests/infra/test_workflow_runs.py` runs the retry itself in moto's
Step Functions engine: a task that fails once with this name still publishes the image.)
"""

import io
import json
import logging

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from moto import mock_aws
from moto.core.exceptions import JsonRESTError
from moto.sagemakerruntime.models import SageMakerRuntimeBackend
from pydantic import ValidationError

from functions.adapters.aws.job_store import GpuJobStore
from functions.adapters.aws.transient import (
    TRANSIENT_ERROR_NAME,
    TransientServiceError,
    retry_transient,
    transient_service_errors,
)
from functions.handlers import submit_gpu_job
from schemas import GpuJobTask, JobKind, JobRequest

from .aws_fixtures import JOBS, REGION, WORK, FakeContext, create_resources

JOB = JobRequest(
    job_id="0123456789abcdef-lifestyle",
    kind=JobKind.LIFESTYLE,
    brand="acme",
    sku="SKU 1",
    inputs={"cutout": f"s3://{WORK}/prepared/0123456789abcdef/cutout.png"},
    output_prefix=f"s3://{WORK}/gpu/outputs/0123456789abcdef/lifestyle",
    seed=42,
)
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAT0kenTokenThatMustNeverBeEchoed" * 10


def _client_error(code: str, status: int = 400, message: str = "Rate exceeded") -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "InvokeEndpointAsync")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "code",
    [
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalServerError",
        "InternalFailure",
        "SlowDown",
    ],
)
def test_throttles_and_transient_service_errors_become_the_one_retried_name(code):
    # Given an AWS call failing with a transient code, When it is made inside the handlers' wrapper
    with pytest.raises(TransientServiceError) as raised, transient_service_errors():
        raise _client_error(code, message=f"echo of the request: {TOKEN}")
    # Then the error is the one name the state machine retries, naming the call and the code, not the message
    assert type(raised.value).__name__ == TRANSIENT_ERROR_NAME
    assert str(raised.value).endswith(f"InvokeEndpointAsync: {code}") and TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    "error",
    [ConnectTimeoutError(endpoint_url="https://runtime.sagemaker"), ReadTimeoutError(endpoint_url="https://x")],
)
def test_connection_and_read_timeouts_are_transient(error):
    @retry_transient
    def call() -> None:
        raise error

    with pytest.raises(TransientServiceError, match=type(error).__name__):
        call()


@pytest.mark.parametrize("code", ["ValidationException", "AccessDeniedException", "NoSuchKey", "InvalidToken"])
def test_other_errors_pass_through_unchanged(code):
    # A bad request or a missing permission fails the task for good: retrying would not help
    with pytest.raises(ClientError) as raised, transient_service_errors():
        raise _client_error(code)
    assert raised.value.response["Error"]["Code"] == code


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would only make the test slower
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    with mock_aws():
        submit_gpu_job.client.cache_clear()
        create_resources(monkeypatch)
        yield
        submit_gpu_job.client.cache_clear()


def _event(token: str = TOKEN, attempt: int = 0) -> dict:
    return {
        "task_token": token,
        **GpuJobTask(attempt=attempt, execution_arn="arn:exec", job=JOB).model_dump(mode="json"),
    }


def test_a_throttled_invoke_endpoint_async_raises_the_retried_error_and_the_retry_invokes_once(aws, monkeypatch):
    # Given the endpoint throttling InvokeEndpointAsync once (moto's backend raises AWS's ThrottlingException)
    original = SageMakerRuntimeBackend.invoke_endpoint_async
    calls: list[str] = []

    def throttled_once(self, *args, **kwargs):
        calls.append("invoke")
        if len(calls) == 1:
            raise JsonRESTError("ThrottlingException", "Rate exceeded")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SageMakerRuntimeBackend, "invoke_endpoint_async", throttled_once)

    # When the submit task runs, Then it fails with the name the state machine retries, the token not in it
    with pytest.raises(TransientServiceError) as raised:
        submit_gpu_job.lambda_handler(_event(), FakeContext())
    assert "InvokeEndpointAsync: ThrottlingException" in str(raised.value) and TOKEN not in str(raised.value)
    # And the job is registered, not invoked: the state machine's retry (same attempt) invokes it, once
    store = GpuJobStore(boto3.client("dynamodb", region_name=REGION), JOBS)
    assert store.get(f"{JOB.job_id}-a0").state.value == "registered"
    assert submit_gpu_job.lambda_handler(_event(), FakeContext())["registration"] == "not_invoked"
    assert store.get(f"{JOB.job_id}-a0").state.value == "in_flight" and len(calls) == 2


@pytest.mark.parametrize(
    "event",
    [
        {"task_token": TOKEN, "attempt": 0},  # no job: pydantic's message would carry the whole event
        {"task_token": TOKEN * 10, "attempt": 0, "job": {}},  # too long a token, and a broken job
        {"task_token": TOKEN, "attempt": "first", "job": JOB.model_dump(mode="json")},
    ],
)
def test_a_refused_submission_never_echoes_the_token_in_its_error_or_logs(aws, event):
    # Given the handler's log lines captured as Lambda writes them
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(submit_gpu_job.logger.registered_formatter)
    submit_gpu_job.logger.addHandler(handler)
    try:
        # When a malformed task input arrives
        with pytest.raises(ValidationError) as raised:
            submit_gpu_job.lambda_handler(event, FakeContext())
    finally:
        submit_gpu_job.logger.removeHandler(handler)
    error = raised.value
    # Then the refusal names the bad fields, and no form of the error or the logs holds the token
    assert error.error_count() >= 1 and error.title == "SubmitRequest"
    texts = [str(error), repr(error), error.json(), json.dumps(error.errors(include_url=False), default=str)]
    texts.append(stream.getvalue())
    for text in texts:
        assert TOKEN[:40] not in text
