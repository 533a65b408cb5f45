"""Driving the flow on one machine: the photos into the intake bucket, S3 notifications through SQS to `ingest`,
the executions watched in moto's Step Functions engine, and the GPU jobs run here as they come in flight.

The driver also keeps what the handlers returned (prepared images, checks, stored reviews) and every GPU job's
result, which the outputs step turns into manifest entries.
"""

import contextlib
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import boto3

from functions.adapters.local.files import path_of
from functions.local.aws_sim.deployment import Deployment
from functions.local.aws_sim.endpoint import GpuEndpoint
from functions.local.aws_sim.lambdas import Invocation, LambdaFunctions, sns_event, sqs_event
from functions.local.aws_sim.stack import REGION, retry_attempts
from functions.local.discovery import InputPhoto
from functions.local.runner import Progress, RunSettings
from schemas import ExecutionInput, JobResult, PreparedImage, ReviewRequest, Status
from schemas.product import SIDECAR_NAME

PREPARE = "functions.handlers.prepare.lambda_handler"
CHECKS = "functions.handlers.automatic_checks.lambda_handler"
REVIEW_NOTIFY = "functions.handlers.review_notify.lambda_handler"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
GPU_JOB_FAILED = "GpuJobFailed"
POLL_SECONDS = 0.05
# With no handler running, no execution changing and no GPU job to run for this long, something is stuck.
STALL_SECONDS = 120.0


class FlowStalledError(RuntimeError):
    pass


@dataclass
class Execution:
    arn: str
    request: ExecutionInput
    status: str = "RUNNING"


@dataclass(frozen=True)
class PrepareFailure:
    error_type: str
    message: str


def intake_key(photo: InputPhoto, intake_prefix: str, brand: str) -> str:
    """`incoming/<brand>/<SKU folder>/<path below it>`; a loose photo is its own SKU folder, named by its stem."""
    tail = photo.source if "/" in photo.source else f"{PurePosixPath(photo.source).stem}/{photo.source}"
    return f"{intake_prefix}{brand}/{tail}"


def sku_folder(photo: InputPhoto) -> Path | None:
    """The SKU folder a photo is in (None for a loose photo)."""
    parts = PurePosixPath(photo.source).parts
    return photo.path.parents[len(parts) - 2] if len(parts) > 1 else None


def upload_brand_store(settings: RunSettings, brands_uri: str) -> int:
    """The brand's local store folder (`<brands>/<brand>/`, profile and adapters) under the stack's BRANDS_URI."""
    profile_uri = settings.brand.resolved.profile_uri
    if not profile_uri or not profile_uri.startswith("file://"):
        return 0
    folder = path_of(profile_uri).parent
    bucket, prefix = bucket_and_prefix(f"{brands_uri.rstrip('/')}/{settings.brand.resolved.brand}/")
    s3 = boto3.client("s3", region_name=REGION)
    files = [path for path in sorted(folder.rglob("*")) if path.is_file()]
    for path in files:
        s3.put_object(Bucket=bucket, Key=prefix + path.relative_to(folder).as_posix(), Body=path.read_bytes())
    return len(files)


def bucket_and_prefix(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> (`bucket`, `some/prefix/`); the prefix may be empty."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def upload_photos(photos: list[InputPhoto], bucket: str, intake_prefix: str, brand: str) -> dict[str, InputPhoto]:
    """Each SKU's product.json first, then every photo, with conditional puts (never over an object); returns the
    photos by key. A photo that cannot be read is left out (its entry says why)."""
    s3 = boto3.client("s3", region_name=REGION)
    sidecars = {folder / SIDECAR_NAME for folder in map(sku_folder, photos) if folder is not None}
    for sidecar in sorted(path for path in sidecars if path.is_file()):
        _put_once(s3, bucket, f"{intake_prefix}{brand}/{sidecar.parent.name}/{SIDECAR_NAME}", sidecar.read_bytes())
    uploaded = {}
    for photo in photos:
        try:
            data = photo.path.read_bytes()
        except OSError:
            continue
        key = intake_key(photo, intake_prefix, brand)
        _put_once(s3, bucket, key, data)
        uploaded[key] = photo
    return uploaded


def _put_once(s3: Any, bucket: str, key: str, data: bytes) -> None:
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise


class FlowDriver:
    """Runs in the sim's main thread: delivers SQS batches and GPU jobs, and notes what each handler returned."""

    def __init__(
        self, deployment: Deployment, functions: LambdaFunctions, endpoint: GpuEndpoint, progress: Progress
    ) -> None:
        self.deployment, self.functions, self.endpoint, self.progress = deployment, functions, endpoint, progress
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.executions: dict[str, Execution] = {}
        self.prepared: dict[str, PreparedImage] = {}  # by intake key
        self.prepare_failures: dict[str, PrepareFailure] = {}
        self.checked: dict[str, ReviewRequest] = {}  # by image id
        self.review_ids: dict[str, str] = {}  # image id -> its review (one per image)
        self.job_results: dict[str, JobResult] = {}  # by the job's id without the attempt, the latest attempt
        self.on_prepared: Callable[[str], None] = lambda key: None  # a photo's prepare finished or failed
        self.gpu_jobs_running = False
        self._gpu_attempts = retry_attempts(deployment.definition, GPU_JOB_FAILED)
        self._last_progress = time.monotonic()

    # -- intake ----------------------------------------------------------------------------------------------------

    def deliver_intake_notifications(self) -> None:
        """What the event source mapping does: receive batches, call ingest, delete all but its reported failures."""
        sqs = boto3.client("sqs", region_name=REGION)
        intake = self.deployment.intake
        while True:
            received = sqs.receive_message(
                QueueUrl=intake.queue_url, MaxNumberOfMessages=min(10, intake.batch_size), AttributeNames=["All"]
            ).get("Messages", [])
            if not received:
                return
            response = self.functions.call(intake.function, sqs_event(received, intake.queue_arn)) or {}
            failed = {failure["itemIdentifier"] for failure in response.get("batchItemFailures", ())}
            done = [m for m in received if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=intake.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
            # Failed messages stay invisible for the queue's VisibilityTimeout, then go to the DLQ: never retried here.

    def discover_executions(self) -> None:
        for arn in self._statuses():
            described = self.sfn.describe_execution(executionArn=arn)
            self.executions[arn] = Execution(arn, ExecutionInput.model_validate_json(described["input"]))
        self.refresh_statuses()

    def _statuses(self) -> dict[str, str]:
        statuses: dict[str, str] = {}
        kwargs: dict[str, Any] = {"stateMachineArn": self.deployment.state_machine_arn, "maxResults": 1000}
        while True:
            page = self.sfn.list_executions(**kwargs)
            statuses.update({e["executionArn"]: e["status"] for e in page["executions"]})
            if not page.get("nextToken"):
                return statuses
            kwargs["nextToken"] = page["nextToken"]

    def refresh_statuses(self) -> None:
        for arn, status in self._statuses().items():
            execution = self.executions.get(arn)
            if execution is not None and execution.status != status:
                execution.status = status
                self._last_progress = time.monotonic()

    # -- what the handlers said ------------------------------------------------------------------------------------

    def drain_invocations(self) -> None:
        while True:
            try:
                invocation = self.functions.invocations.get_nowait()
            except queue.Empty:
                return
            self._last_progress = time.monotonic()
            self._note(invocation)

    def _note(self, invocation: Invocation) -> None:
        if invocation.handler == PREPARE:
            key = str(invocation.event.get("key"))
            if invocation.failed:
                assert invocation.error_type is not None
                self.prepare_failures[key] = PrepareFailure(invocation.error_type, invocation.error_message or "")
            else:
                self.prepared[key] = PreparedImage.model_validate(invocation.result)
            self.on_prepared(key)
        elif invocation.handler == CHECKS and not invocation.failed:
            image_id = str(invocation.event["prepared"]["image_id"])
            self.checked[image_id] = ReviewRequest.model_validate(invocation.result)
        elif invocation.handler == REVIEW_NOTIFY and not invocation.failed:
            # The image's packshot item comes first, named `<image id>-packshot` (functions.stages.review_items).
            first_item = str(invocation.event["items"][0]["item_id"])
            image_id = next(
                (i for i, r in self.checked.items() if r.items[0].item_id == first_item),
                first_item.removesuffix("-packshot"),
            )
            self.review_ids[image_id] = str(invocation.result["review_id"])

    # -- GPU jobs --------------------------------------------------------------------------------------------------

    def run_gpu_job(self) -> bool:
        """Run one job in flight, if any (one at a time: one GPU); True when one ran."""
        result = self.endpoint.run_next_job(self._deliver_notification)
        if result is None:
            return False
        self._last_progress = time.monotonic()
        base_id, _, attempt = result.job_id.rpartition("-a")
        self.job_results[base_id] = result
        final = result.status is Status.SUCCEEDED or int(attempt or 0) + 1 >= self._gpu_attempts
        if final:
            self.progress.job_done(result)
        return True

    def _deliver_notification(self, topic_arn: str, message: str) -> None:
        """Publish to the topic (moto) and deliver to each subscribed function, as SNS does for `lambda` protocol."""
        message_id = boto3.client("sns", region_name=REGION).publish(TopicArn=topic_arn, Message=message)["MessageId"]
        for function, subscription in self.deployment.subscribers.get(topic_arn, ()):
            self.functions.call(function, sns_event(topic_arn, message, subscription, message_id))

    def gpu_job_count(self) -> int:
        return sum(len(prepared.jobs) for prepared in self.prepared.values())

    # -- waiting ---------------------------------------------------------------------------------------------------

    def all_prepared(self) -> bool:
        return all(
            e.status in TERMINAL or e.request.key in self.prepared or e.request.key in self.prepare_failures
            for e in self.executions.values()
        )

    def all_awaiting_review(self) -> bool:
        return all(e.status in TERMINAL or e.request.image_id in self.review_ids for e in self.executions.values())

    def all_finished(self) -> bool:
        return all(e.status in TERMINAL for e in self.executions.values())

    def advance(self, until: Callable[[], bool], stall_seconds: float = STALL_SECONDS) -> None:
        """Let the flow run (and run GPU jobs once allowed) until `until()` holds."""
        self._last_progress = time.monotonic()
        while True:
            self.drain_invocations()
            self.refresh_statuses()
            self.drain_invocations()  # what finished while the statuses were read
            if until():
                return
            if self.gpu_jobs_running and self.run_gpu_job():
                continue
            if self.functions.busy:
                self._last_progress = time.monotonic()
            elif time.monotonic() - self._last_progress > stall_seconds:
                stuck = sorted(e.request.key for e in self.executions.values() if e.status not in TERMINAL)
                raise FlowStalledError(f"the AWS flow made no progress for {stall_seconds:.0f} s; waiting: {stuck}")
            time.sleep(POLL_SECONDS)

    def stop_running_executions(self) -> None:
        """A run that ends early (an error, Ctrl-C) stops what still runs, so no execution outlives moto."""
        for execution in self.executions.values():
            if execution.status not in TERMINAL:
                with contextlib.suppress(Exception):
                    self.sfn.stop_execution(executionArn=execution.arn, error="SimEnded", cause="the aws-sim run ended")

    def failure_of(self, execution: Execution) -> tuple[str, str]:
        """A failed execution's error and cause."""
        described = self.sfn.describe_execution(executionArn=execution.arn)
        return str(described.get("error") or ""), str(described.get("cause") or "")
