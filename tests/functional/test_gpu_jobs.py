"""The GPU job handlers against moto: one InvokeEndpointAsync per attempt however often the task is delivered,
outcomes settle a job once, the reconciler fails jobs that never got one."""

import json
import subprocess
import sys
import time

import boto3
import pytest
from moto import mock_aws

from functions.aws.job_store import GpuJobStore, JobState
from functions.handlers import gpu_job_outcome, reconcile_gpu_jobs, submit_gpu_job

from .aws_fixtures import JOBS, REGION, WORK, FakeContext, create_resources

JOB = {
    "job_id": "0123456789abcdef-lifestyle",
    "kind": "lifestyle",
    "brand": "acme",
    "sku": "SKU 1",
    "inputs": {"cutout": f"s3://{WORK}/prepared/0123456789abcdef/cutout.png"},
    "output_prefix": f"s3://{WORK}/gpu/outputs/0123456789abcdef/lifestyle",
}


def count_calls(client, operation: str) -> list[dict]:
    calls: list[dict] = []
    client.meta.events.register(f"provide-client-params.*.{operation}", lambda params, **_: calls.append(dict(params)))
    return calls


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    with mock_aws():
        for module in (submit_gpu_job, gpu_job_outcome, reconcile_gpu_jobs):
            module.client.cache_clear()
        create_resources(monkeypatch)
        yield


def submit(token: str, attempt: int = 0) -> dict:
    event = {"task_token": token, "attempt": attempt, "execution_arn": "arn:exec", "job": JOB}
    return submit_gpu_job.lambda_handler(event, FakeContext())


def test_the_same_task_delivered_five_times_invokes_the_endpoint_once(aws):
    # Given the submit task delivered five times (Lambda retries, a redelivered token)
    invocations = count_calls(submit_gpu_job.client("sagemaker-runtime"), "InvokeEndpointAsync")

    # When each delivery runs
    results = [submit(f"token-{n}") for n in range(5)]

    # Then one InvokeEndpointAsync, with the attempt's job id as InferenceId and the request JSON in S3
    assert len(invocations) == 1
    assert invocations[0]["InferenceId"] == "0123456789abcdef-lifestyle-a0"
    assert [r["registration"] for r in results] == ["new"] + ["already_invoked"] * 4
    body = boto3.client("s3").get_object(Bucket=WORK, Key="gpu/requests/0123456789abcdef-lifestyle-a0.json")["Body"]
    assert json.loads(body.read())["output_prefix"].endswith("/lifestyle/a0")
    # And the newest token is the one stored (the live task is the one to resume)
    assert GpuJobStore(boto3.client("dynamodb"), JOBS).get("0123456789abcdef-lifestyle-a0").task_token == "token-4"


def test_a_retry_is_a_new_job(aws):
    invocations = count_calls(submit_gpu_job.client("sagemaker-runtime"), "InvokeEndpointAsync")
    submit("token-a", attempt=0)
    submit("token-b", attempt=1)
    assert [i["InferenceId"] for i in invocations] == ["0123456789abcdef-lifestyle-a0", "0123456789abcdef-lifestyle-a1"]


def test_duplicate_outcome_notifications_resume_once(aws):
    # Given a submitted job whose result the endpoint wrote
    submit("token-1")
    result = {
        "job_id": "0123456789abcdef-lifestyle-a0",
        "kind": "lifestyle",
        "status": "succeeded",
        "outputs": [{"uri": f"s3://{WORK}/gpu/outputs/x/lifestyle_0.png"}],
    }
    boto3.client("s3").put_object(Bucket=WORK, Key="gpu/results/r1.out", Body=json.dumps(result).encode())
    resumes = count_calls(gpu_job_outcome.client("stepfunctions"), "SendTaskSuccess")
    message = {
        "invocationStatus": "Completed",
        "inferenceId": "0123456789abcdef-lifestyle-a0",
        "responseParameters": {"outputLocation": f"s3://{WORK}/gpu/results/r1.out"},
    }
    event = {"Records": [{"Sns": {"Message": json.dumps(message)}}] * 3}

    # When SNS delivers the success notification three times
    response = gpu_job_outcome.lambda_handler(event, FakeContext())

    # Then the task is resumed once, with the result, and the job is settled
    assert response["results"] == ["settled", "already_settled", "already_settled"]
    assert len(resumes) == 1 and resumes[0]["taskToken"] == "token-1"
    assert json.loads(resumes[0]["output"])["outputs"][0]["uri"].endswith("lifestyle_0.png")
    assert GpuJobStore(boto3.client("dynamodb"), JOBS).get("0123456789abcdef-lifestyle-a0").state is JobState.SUCCEEDED


def test_error_notification_fails_the_task(aws):
    submit("token-1")
    failures = count_calls(gpu_job_outcome.client("stepfunctions"), "SendTaskFailure")
    message = {"invocationStatus": "Failed", "inferenceId": "0123456789abcdef-lifestyle-a0", "failureReason": "OOM"}
    gpu_job_outcome.lambda_handler({"Records": [{"Sns": {"Message": json.dumps(message)}}]}, FakeContext())
    assert failures[0]["error"] == "GpuJobFailed" and "OOM" in failures[0]["cause"]


def test_reconciler_fails_jobs_without_an_outcome(aws):
    # Given a job submitted long ago that never got a notification or a result (moto writes a canned one: removed)
    submit("token-1")
    stored = GpuJobStore(boto3.client("dynamodb"), JOBS).get("0123456789abcdef-lifestyle-a0")
    assert stored is not None and stored.output_location
    bucket, _, key = stored.output_location.removeprefix("s3://").partition("/")
    boto3.client("s3").delete_object(Bucket=bucket, Key=key)
    failures = count_calls(reconcile_gpu_jobs.client("stepfunctions"), "SendTaskFailure")

    # When the reconciler runs after RequestTTL + invocation timeout + grace
    counts = reconcile_gpu_jobs.reconcile(time.time() + 24 * 3600)

    # Then the task fails with GpuJobTimedOut (the state machine retries it as a new attempt)
    assert counts == {"timed_out": 1}
    assert failures[0]["error"] == "GpuJobTimedOut"
    assert reconcile_gpu_jobs.reconcile(time.time() + 24 * 3600) == {}


@pytest.mark.parametrize(
    "module", ["ingest", "submit_gpu_job", "gpu_job_outcome", "reconcile_gpu_jobs", "automatic_checks", "publish"]
)
def test_light_handlers_import_no_image_or_ml_library(module):
    # Given a fresh interpreter, When the handler module is imported, Then no heavy library came with it
    code = (
        f"import sys, functions.handlers.{module}; "
        "heavy = [m for m in ('torch', 'diffusers', 'rembg', 'cv2', 'onnxruntime') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
