"""The synthesized state machine, executed by moto's Step Functions engine. The task Lambdas are fakes the test
controls (routed by the function each Task names); `.waitForTaskToken` tasks are resumed the way the real outcome
handler and review service do it: SendTaskSuccess / SendTaskFailure with the stored token.

Every payload a fake returns, and every payload the state machine hands a fake, is built from or parsed by the
`schemas/workflow.py` models the real handlers use, so the definition and the handlers cannot drift apart.
(`tests/e2e/test_aws_sim.py` runs the same definition with the real handlers.)
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from functions.adapters.aws.job_outcomes import task_output
from schemas import (
    ChecksInput,
    Cutout,
    ExecutionInput,
    GpuJobTask,
    IntakeInfo,
    JobKind,
    JobOutput,
    JobRequest,
    JobResult,
    PreparedFiles,
    PreparedImage,
    PublishInput,
    PublishResult,
    RejectionReason,
    ResolvedBrand,
    ReviewDecision,
    ReviewItem,
    ReviewOutcome,
    ReviewRequest,
    ReviewState,
    Status,
    Verdict,
)

from .asl import ACCOUNT, REGION, definition_from_template, shorten_waits, walk_states

ROLE = f"arn:aws:iam::{ACCOUNT}:role/catalog-sfn"
DONE = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


class FunctionError(Exception):
    """Raised by a fake task: the invocation fails with this error type, as the Lambda runtime reports an
    unhandled exception (`X-Amz-Function-Error` and `{"errorType": <class name>, "errorMessage": ...}`)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message


class FakeTasks:
    """What each task Lambda returns, by the logical id prefix of the function the definition names."""

    def __init__(self, jobs: tuple[str, ...]) -> None:
        self.jobs = jobs
        self.lock = threading.Lock()
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "WorkflowPrepare": self.prepare,
            "GpuSubmit": self.submit,
            "WorkflowChecks": self.checks,
            "ReviewNotify": lambda payload: {"review_id": "r" * 16},
            "WorkflowPublish": self.publish,
        }

    def __call__(self, function_arn: str, payload: dict[str, Any]) -> dict[str, Any]:
        name = function_arn.rsplit(":", 1)[-1]
        role = next(prefix for prefix in self.handlers if name.startswith(prefix))
        with self.lock:
            self.calls.setdefault(role, []).append(payload)
        return self.handlers[role](payload)

    def prepare(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = ExecutionInput.model_validate(payload)  # what ingest starts the execution with
        prefix = f"s3://catalog-work/prepared/{request.image_id}/"
        files = PreparedFiles(
            cutout=f"{prefix}cutout.png",
            mask=f"{prefix}mask.png",
            packshot=f"{prefix}packshot.jpg",
            normalised=f"{prefix}normalised.png",
            original_preview=f"{prefix}preview.original.jpg",
        )
        prepared = PreparedImage(
            image_id=request.image_id,
            brand=ResolvedBrand(brand=request.brand),
            sku=request.sku,
            source=f"s3://{request.bucket}/{request.key}",
            filename=request.filename,
            publish_stem=f"{request.sku}/front",
            content_sha256="0" * 64,
            intake=IntakeInfo(detected_format="JPEG", width=600, height=800, mode="RGB"),
            cutout=Cutout(engine="backdrop", confidence=0.9, low_confidence=False, coverage=0.3),
            files=files,
            reviewers=("buyer@brand.example.com",),
            jobs=tuple(
                JobRequest(
                    job_id=f"{request.image_id}-{kind.replace('_', '-')}",
                    kind=JobKind(kind),
                    brand=request.brand,
                    sku=request.sku,
                    inputs={"cutout": files.cutout},
                    output_prefix=f"s3://catalog-work/gpu/outputs/{request.image_id}/{kind}",
                    seed=7,
                )
                for kind in self.jobs
            ),
        )
        return prepared.model_dump(mode="json")

    def submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        task = GpuJobTask.model_validate({k: v for k, v in payload.items() if k != "task_token"})
        return {"job_id": task.job.job_id}

    def checks(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = ChecksInput.model_validate(payload)
        prepared = request.prepared
        items = [
            ReviewItem(
                item_id=f"{prepared.image_id}-packshot",
                sku=prepared.sku,
                original=prepared.files.packshot,
                generated=prepared.files.packshot,
                job_kind="packshot",
            )
        ]
        items += [
            ReviewItem(
                item_id=f"{result.job_id}-0",
                sku=prepared.sku,
                original=prepared.files.packshot,
                generated=result.outputs[0].uri,
                job_kind=result.kind.value,
            )
            for result in request.gpu_results
        ]
        review = ReviewRequest(brand=prepared.brand.brand, reviewers=prepared.reviewers, items=tuple(items))
        return review.model_dump(mode="json")

    def publish(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = PublishInput.model_validate(payload)
        approved = [d for d in request.outcome.decisions if d.verdict is Verdict.APPROVED]
        result = PublishResult(
            published=tuple(f"s3://catalog-output/approved/{d.item_id}.png" for d in approved),
            rejected=tuple(d.item_id for d in request.outcome.decisions if d.verdict is not Verdict.APPROVED),
        )
        return result.model_dump(mode="json")

    def count(self, role: str) -> int:
        with self.lock:
            return len(self.calls.get(role, []))

    def payloads(self, role: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.calls.get(role, []))


@pytest.fixture
def definition(synthesized) -> dict[str, Any]:
    return shorten_waits(definition_from_template(synthesized.template))


@pytest.fixture
def sfn(monkeypatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        yield boto3.client("stepfunctions", region_name=REGION)


def run(sfn: Any, definition: dict[str, Any], fakes: FakeTasks, monkeypatch) -> str:
    def invoke(self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any) -> bytes:
        try:
            return json.dumps(fakes(function_name, json.loads(body))).encode()
        except FunctionError as error:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": error.error_type, "errorMessage": error.message}).encode()

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    machine = sfn.create_state_machine(name="per-image", definition=json.dumps(definition), roleArn=ROLE)
    execution_input = ExecutionInput(
        bucket="catalog-intake",
        key="incoming/acme/SKU 1/front.jpg",
        version_id="v1",
        size=1234,
        brand="acme",
        sku="SKU 1",
        filename="front.jpg",
        image_id="0123456789abcdef0123456789abcdef",
    )
    started = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input=execution_input.model_dump_json())
    return str(started["executionArn"])


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the workflow"
        time.sleep(0.05)


def finished(sfn: Any, execution_arn: str) -> dict[str, Any]:
    wait_for(lambda: sfn.describe_execution(executionArn=execution_arn)["status"] in DONE)
    return dict(sfn.describe_execution(executionArn=execution_arn))


def entered_states(sfn: Any, execution_arn: str) -> list[str]:
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def succeed_gpu_jobs(sfn: Any, fakes: FakeTasks, count: int) -> None:
    wait_for(lambda: fakes.count("GpuSubmit") >= count)
    for payload in fakes.payloads("GpuSubmit")[:count]:
        job = GpuJobTask.model_validate({k: v for k, v in payload.items() if k != "task_token"}).job
        result = JobResult(
            job_id=job.job_id,
            kind=job.kind,
            status=Status.SUCCEEDED,
            outputs=(JobOutput(uri=f"{job.output_prefix}/0.png", seed=job.seed),),
            adapter_versions={"acme-ss27": "v3"},
        )
        # What the real outcome handler sends (functions/adapters/aws/job_outcomes.py).
        sfn.send_task_success(taskToken=payload["task_token"], output=json.dumps(task_output(result)))


def decide(sfn: Any, fakes: FakeTasks, verdict: str) -> None:
    wait_for(lambda: fakes.count("ReviewNotify") >= 1)
    request = fakes.payloads("ReviewNotify")[0]
    decisions = tuple(
        ReviewDecision(
            item_id=item["item_id"],
            verdict=Verdict(verdict),
            reason=None if verdict == "approved" else RejectionReason.OFF_BRAND,
            reviewer="buyer@brand.example.com",
            decided_at=datetime.now(UTC),
        )
        for item in request["items"]
    )
    outcome = ReviewOutcome(review_id="r" * 16, state=ReviewState.DECIDED, decisions=decisions)
    sfn.send_task_success(taskToken=request["task_token"], output=outcome.model_dump_json())


def test_happy_path_two_job_kinds_and_an_approval(sfn, definition, monkeypatch):
    # Given a product asking for a lifestyle scene and a ghost mannequin
    fakes = FakeTasks(jobs=("lifestyle", "ghost_mannequin"))
    execution = run(sfn, definition, fakes, monkeypatch)

    # When both GPU jobs succeed and the reviewer approves everything
    succeed_gpu_jobs(sfn, fakes, 2)
    decide(sfn, fakes, "approved")

    # Then the execution publishes, having asked for each job once and shown the reviewer all three images
    result = finished(sfn, execution)
    assert result["status"] == "SUCCEEDED", result
    assert sorted(p["job"]["kind"] for p in fakes.payloads("GpuSubmit")) == ["ghost_mannequin", "lifestyle"]
    assert all(p["attempt"] == 0 and p["task_token"] for p in fakes.payloads("GpuSubmit"))
    review_request = fakes.payloads("ReviewNotify")[0]
    review = ReviewRequest.model_validate({k: v for k, v in review_request.items() if k != "task_token"})
    assert len(review.items) == 3
    assert review.reviewers == ("buyer@brand.example.com",)
    # The GPU results reach the checks whole: which adapter made each image is not lost on the way.
    checks_input = ChecksInput.model_validate(fakes.payloads("WorkflowChecks")[0])
    assert [r.adapter_versions for r in checks_input.gpu_results] == [{"acme-ss27": "v3"}] * 2
    assert PublishInput.model_validate(fakes.payloads("WorkflowPublish")[0]).outcome.state is ReviewState.DECIDED
    assert json.loads(result["output"])["published"]["published_count"] == 3
    assert entered_states(sfn, execution)[-1] == "Published"


def test_gpu_job_failure_is_retried_then_fails_the_image(sfn, definition, monkeypatch):
    # Given one GPU job
    fakes = FakeTasks(jobs=("lifestyle",))
    execution = run(sfn, definition, fakes, monkeypatch)
    retries = walk_states(definition)["RunGpuJob"]["Retry"]
    attempts = 1 + next(r["MaxAttempts"] for r in retries if "GpuJobFailed" in r["ErrorEquals"])

    # When every attempt fails on the endpoint
    for attempt in range(attempts):
        wait_for(lambda attempt=attempt: fakes.count("GpuSubmit") > attempt)
        token = fakes.payloads("GpuSubmit")[attempt]["task_token"]
        sfn.send_task_failure(taskToken=token, error="GpuJobFailed", cause=f"attempt {attempt}: CUDA out of memory")

    # Then each retry was a new attempt, and the image ends in the failed state with the reason
    result = finished(sfn, execution)
    assert result["status"] == "FAILED"
    assert [p["attempt"] for p in fakes.payloads("GpuSubmit")] == list(range(attempts))
    assert result["error"] == "GpuJobFailed"  # (moto drops SendTaskFailure's cause; AWS carries it to the Fail state)
    states = entered_states(sfn, execution)
    assert states[-1] == "ImageFailed"
    assert "HumanReview" not in states and fakes.count("WorkflowPublish") == 0


def test_review_rejection_is_recorded_not_published(sfn, definition, monkeypatch):
    # Given a processed image awaiting review
    fakes = FakeTasks(jobs=("lifestyle",))
    execution = run(sfn, definition, fakes, monkeypatch)
    succeed_gpu_jobs(sfn, fakes, 1)

    # When the reviewer rejects everything
    decide(sfn, fakes, "rejected")

    # Then publish records the rejections and the execution ends without publishing anything
    result = finished(sfn, execution)
    assert result["status"] == "SUCCEEDED"
    publish_input = fakes.payloads("WorkflowPublish")[0]
    assert {d["verdict"] for d in publish_input["outcome"]["decisions"]} == {"rejected"}
    assert entered_states(sfn, execution)[-1] == "RejectionRecorded"


def test_review_expiry_ends_in_review_not_decided(sfn, definition, monkeypatch):
    # Given an image awaiting review
    fakes = FakeTasks(jobs=())
    execution = run(sfn, definition, fakes, monkeypatch)
    wait_for(lambda: fakes.count("ReviewNotify") >= 1)

    # When the review sweep expires the batch (SendTaskFailure ReviewExpired, as functions.review.resume does)
    token = fakes.payloads("ReviewNotify")[0]["task_token"]
    sfn.send_task_failure(taskToken=token, error="ReviewExpired", cause="Review rrrr expired with 1 item undecided")

    # Then nothing is published and the execution fails with the review's reason
    result = finished(sfn, execution)
    assert (result["status"], result["error"]) == ("FAILED", "ReviewExpired")
    assert entered_states(sfn, execution)[-1] == "ReviewNotDecided"
    assert fakes.count("WorkflowPublish") == 0


def test_review_wait_times_out(sfn, definition, monkeypatch):
    # Given the review task's timeout cut to one second (the template's is the link lifetime plus an hour)
    states = walk_states(definition)
    assert states["HumanReview"]["TimeoutSeconds"] >= 72 * 3600
    states["HumanReview"]["TimeoutSeconds"] = 1
    fakes = FakeTasks(jobs=())

    # When nobody ever resumes it
    execution = run(sfn, definition, fakes, monkeypatch)

    # Then the wait ends in States.Timeout, caught into the review-timed-out state
    result = finished(sfn, execution)
    assert (result["status"], result["error"]) == ("FAILED", "ReviewTimedOut")
    assert entered_states(sfn, execution)[-1] == "ReviewTimedOut"
    assert fakes.count("WorkflowPublish") == 0


@pytest.mark.parametrize("task", ["WorkflowPrepare", "GpuSubmit", "WorkflowChecks", "ReviewNotify", "WorkflowPublish"])
def test_a_throttle_inside_a_task_is_retried_and_the_image_still_publishes(sfn, definition, monkeypatch, task):
    # Given a task whose first invocation meets a throttle (functions/adapters/aws/transient.py re-raises it as
    # TransientServiceError, the name Lambda reports as the function error), and which then succeeds
    fakes = FakeTasks(jobs=("lifestyle",))
    handler, failed = fakes.handlers[task], []

    def throttled_once(payload: dict[str, Any]) -> dict[str, Any]:
        if not failed:
            failed.append(payload)
            raise FunctionError(
                "TransientServiceError", "transient AWS error: InvokeEndpointAsync: ThrottlingException"
            )
        return handler(payload)

    fakes.handlers[task] = throttled_once
    execution = run(sfn, definition, fakes, monkeypatch)

    # When the GPU job succeeds and the reviewer approves
    succeed_gpu_jobs(sfn, fakes, 1)
    decide(sfn, fakes, "approved")

    # Then the image still publishes: the task was tried again, and the second invocation did the work
    result = finished(sfn, execution)
    assert result["status"] == "SUCCEEDED", result
    assert entered_states(sfn, execution)[-1] == "Published"
    assert failed and fakes.count(task) == 2


def test_every_task_retries_the_transient_error_with_backoff_and_full_jitter(definition):
    # Given the synthesized definition, Then each task retries TransientServiceError with growing, jittered waits
    tasks = {name: s for name, s in walk_states(definition).items() if s["Type"] == "Task"}
    assert set(tasks) == {"PrepareImage", "RunGpuJob", "AutomaticChecks", "HumanReview", "PublishDecisions"}
    for name, task in tasks.items():
        retry = next(r for r in task["Retry"] if "TransientServiceError" in r["ErrorEquals"])
        assert retry["JitterStrategy"] == "FULL" and retry["BackoffRate"] > 1 and retry["MaxAttempts"] >= 3, name
