"""The GPU job handlers against moto: one InvokeEndpointAsync per attempt however often the task is delivered,
outcomes settle a job once, the reconciler fails jobs that never got one."""

import json
import subprocess
import sys
import time

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from functions.adapters.aws.job_store import GpuJobStore, JobState
from functions.handlers import gpu_job_outcome, reconcile_gpu_jobs, submit_gpu_job
from schemas import GpuJobTask, JobKind, JobOutput, JobRequest, JobResult, Status

from .aws_fixtures import JOBS, REGION, WORK, FakeContext, create_resources

JOB_ID = "0123456789abcdef-lifestyle"
JOB = JobRequest(
    job_id=JOB_ID,
    kind=JobKind.LIFESTYLE,
    brand="acme",
    sku="SKU 1",
    inputs={"cutout": f"s3://{WORK}/prepared/0123456789abcdef/cutout.png"},
    output_prefix=f"s3://{WORK}/gpu/outputs/0123456789abcdef/lifestyle",
    seed=42,
    params={"brand_profile": {"brand": "acme", "adapters": []}},
)


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
    """The submit task's input: the Map's GpuJobTask (the attempt and the prepared JobRequest) plus the token."""
    task = GpuJobTask(attempt=attempt, execution_arn="arn:exec", job=JOB)
    event = {"task_token": token, **task.model_dump(mode="json")}
    return submit_gpu_job.lambda_handler(event, FakeContext())


def test_the_same_task_delivered_five_times_invokes_the_endpoint_once(aws):
    # Given the submit task delivered five times (Lambda retries, a redelivered token)
    invocations = count_calls(submit_gpu_job.client("sagemaker-runtime"), "InvokeEndpointAsync")

    # When each delivery runs
    results = [submit(f"token-{n}") for n in range(5)]

    # Then one InvokeEndpointAsync, with the attempt's job id as InferenceId and the request JSON in S3
    assert len(invocations) == 1
    assert invocations[0]["InferenceId"] == f"{JOB_ID}-a0"
    assert [r["registration"] for r in results] == ["new"] + ["already_invoked"] * 4
    body = boto3.client("s3").get_object(Bucket=WORK, Key=f"gpu/requests/{JOB_ID}-a0.json")["Body"]
    # And the request the endpoint reads is the prepared JobRequest, renamed for the attempt, nothing else changed
    request = JobRequest.model_validate_json(body.read())
    assert request.output_prefix == f"{JOB.output_prefix}/a0"
    assert request.model_copy(update={"job_id": JOB_ID, "output_prefix": JOB.output_prefix}) == JOB
    # And the newest token is the one stored (the live task is the one to resume)
    assert GpuJobStore(boto3.client("dynamodb"), JOBS).get(f"{JOB_ID}-a0").task_token == "token-4"


def test_a_task_token_longer_than_step_functions_makes_is_refused(aws):
    # Given a task whose token is longer than any Step Functions token (2048 characters)
    invocations = count_calls(submit_gpu_job.client("sagemaker-runtime"), "InvokeEndpointAsync")

    # When it is submitted, Then it is refused before anything is invoked
    with pytest.raises(ValidationError, match="task_token"):
        submit("t" * 2049)
    assert invocations == []
    # And a token of the longest size Step Functions makes is accepted
    assert submit("t" * 2048)["registration"] == "new"


def test_a_retry_is_a_new_job(aws):
    invocations = count_calls(submit_gpu_job.client("sagemaker-runtime"), "InvokeEndpointAsync")
    submit("token-a", attempt=0)
    submit("token-b", attempt=1)
    assert [i["InferenceId"] for i in invocations] == [f"{JOB_ID}-a0", f"{JOB_ID}-a1"]


def test_duplicate_outcome_notifications_resume_once_with_the_whole_result(aws):
    # Given a submitted job whose result the endpoint wrote, with its model and adapter versions
    submit("token-1")
    result = JobResult(
        job_id=f"{JOB_ID}-a0",
        kind=JobKind.LIFESTYLE,
        status=Status.SUCCEEDED,
        outputs=(JobOutput(uri=f"s3://{WORK}/gpu/outputs/x/lifestyle_0.png", seed=42),),
        model_version="sdxl-base-1.0",
        adapter_versions={"acme-ss27": "v3"},
        timings_s={"load": 3.0, "total": 9.5},
    )
    boto3.client("s3").put_object(Bucket=WORK, Key="gpu/results/r1.out", Body=result.model_dump_json().encode())
    resumes = count_calls(gpu_job_outcome.client("stepfunctions"), "SendTaskSuccess")
    message = {
        "invocationStatus": "Completed",
        "inferenceId": f"{JOB_ID}-a0",
        "responseParameters": {"outputLocation": f"s3://{WORK}/gpu/results/r1.out"},
    }
    event = {"Records": [{"Sns": {"Message": json.dumps(message)}}] * 3}

    # When SNS delivers the success notification three times
    response = gpu_job_outcome.lambda_handler(event, FakeContext())

    # Then the task is resumed once, and the job is settled
    assert response["results"] == ["settled", "already_settled", "already_settled"]
    assert len(resumes) == 1 and resumes[0]["taskToken"] == "token-1"
    assert GpuJobStore(boto3.client("dynamodb"), JOBS).get(f"{JOB_ID}-a0").state is JobState.SUCCEEDED
    # And the Map gets the whole JobResult: outputs, model and adapter versions (for the review item), no timings
    output = json.loads(resumes[0]["output"])
    assert "timings_s" not in output
    assert JobResult.model_validate(output) == result.model_copy(update={"timings_s": {}})


def test_error_notification_fails_the_task(aws):
    submit("token-1")
    failures = count_calls(gpu_job_outcome.client("stepfunctions"), "SendTaskFailure")
    message = {"invocationStatus": "Failed", "inferenceId": f"{JOB_ID}-a0", "failureReason": "OOM"}
    gpu_job_outcome.lambda_handler({"Records": [{"Sns": {"Message": json.dumps(message)}}]}, FakeContext())
    assert failures[0]["error"] == "GpuJobFailed" and "OOM" in failures[0]["cause"]


def test_reconciler_fails_jobs_without_an_outcome(aws):
    # Given a job submitted long ago that never got a notification or a result (moto writes a canned one: removed)
    submit("token-1")
    stored = GpuJobStore(boto3.client("dynamodb"), JOBS).get(f"{JOB_ID}-a0")
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
