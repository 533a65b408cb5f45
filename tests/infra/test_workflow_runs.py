"""The synthesized state machine, executed by moto's Step Functions engine. The task Lambdas are fakes the test
controls (routed by the function each Task names); `.waitForTaskToken` tasks are resumed the way the real outcome
handler and review service do it: SendTaskSuccess / SendTaskFailure with the stored token.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from .asl import ACCOUNT, REGION, definition_from_template, shorten_waits, walk_states

ROLE = f"arn:aws:iam::{ACCOUNT}:role/catalog-sfn"
DONE = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


class FakeTasks:
    """What each task Lambda returns, by the logical id prefix of the function the definition names."""

    def __init__(self, jobs: tuple[str, ...]) -> None:
        self.jobs = jobs
        self.lock = threading.Lock()
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "WorkflowPrepare": self.prepare,
            "GpuSubmit": lambda payload: {"job_id": payload["job"]["job_id"]},
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
        image_id = payload["image_id"]
        return {
            "image_id": image_id,
            "brand": payload["brand"],
            "sku": payload["sku"],
            "normalised": f"s3://work/prepared/{image_id}/normalised.png",
            "packshot": f"s3://work/prepared/{image_id}/packshot.jpg",
            "reviewers": ["buyer@brand.example.com"],
            "jobs": [{"job_id": f"{image_id}-{kind}", "kind": kind} for kind in self.jobs],
        }

    def checks(self, payload: dict[str, Any]) -> dict[str, Any]:
        items = [{"item_id": "packshot", "generated": payload["prepared"]["packshot"]}]
        items += [{"item_id": r["job_id"], "generated": r["outputs"][0]["uri"]} for r in payload["gpu_results"]]
        return {"brand": payload["prepared"]["brand"], "reviewers": payload["prepared"]["reviewers"], "items": items}

    def publish(self, payload: dict[str, Any]) -> dict[str, Any]:
        approved = [d for d in payload["outcome"]["decisions"] if d["verdict"] == "approved"]
        return {
            "published_count": len(approved),
            "rejected_count": len(payload["outcome"]["decisions"]) - len(approved),
        }

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
        return json.dumps(fakes(function_name, json.loads(body))).encode()

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    machine = sfn.create_state_machine(name="per-image", definition=json.dumps(definition), roleArn=ROLE)
    execution_input = {
        "bucket": "intake",
        "key": "incoming/acme/SKU 1/front.jpg",
        "brand": "acme",
        "sku": "SKU 1",
        "filename": "front.jpg",
        "image_id": "0123456789abcdef0123456789abcdef",
    }
    started = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input=json.dumps(execution_input))
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
        job = payload["job"]
        result = {
            "job_id": job["job_id"],
            "kind": job["kind"],
            "status": "succeeded",
            "outputs": [{"uri": f"s3://work/gpu/outputs/{job['job_id']}/0.png"}],
        }
        sfn.send_task_success(taskToken=payload["task_token"], output=json.dumps(result))


def decide(sfn: Any, fakes: FakeTasks, verdict: str) -> None:
    wait_for(lambda: fakes.count("ReviewNotify") >= 1)
    request = fakes.payloads("ReviewNotify")[0]
    decisions = [{"item_id": item["item_id"], "verdict": verdict} for item in request["items"]]
    sfn.send_task_success(
        taskToken=request["task_token"],
        output=json.dumps({"review_id": "r" * 16, "state": "decided", "decisions": decisions, "pending_item_ids": []}),
    )


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
    assert len(review_request["items"]) == 3
    assert review_request["reviewers"] == ["buyer@brand.example.com"]
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
