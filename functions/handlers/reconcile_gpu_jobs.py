"""Scheduled: GPU jobs with no outcome after RequestTTL + invocation timeout (+ grace) are settled.

A result or failure object that exists (its notification was lost) settles the job as the notification would
have; otherwise the task fails with `GpuJobTimedOut`, which the state machine retries as a new attempt (a fresh
job id) and, when retries are spent, routes to its failed state.

Each run is bounded: it reads the open jobs page by page from the sparse `open-jobs` index (oldest first), handles at
most `MAX_JOBS_PER_RUN`, and stops early when the Lambda's remaining time gets short; the next run (every 10 minutes)
goes on where this one stopped, since settled jobs leave the index. A job that cannot be settled now (a throttle, say)
is logged and counted, and the run goes on with the next one.
"""

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import job_outcomes
from functions.adapters.aws.clients import client
from functions.adapters.aws.job_store import GpuJobStore, StoredJob
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.s3_storage import s3_location
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.gpu_jobs import GpuJobSettings
from functions.adapters.aws.transient import transient_reason

logger = Logger(service="gpu-jobs")
tracer = tracer_for("gpu-jobs")
metrics = Metrics(namespace="CatalogImages", service="gpu-jobs")
SETTINGS = GpuJobSettings

PAGE_SIZE = 25  # jobs read from the index per query
MAX_JOBS_PER_RUN = 200  # well inside the 5-minute timeout: a job costs a few S3 and Step Functions calls
STOP_WITH_MS_LEFT = 30_000  # stop taking new jobs when less time than this is left


def _exists(s3: Any, uri: str | None) -> bool:
    if not uri:
        return False
    bucket, key = s3_location(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def reconcile_job(store: GpuJobStore, job: StoredJob) -> str:
    sfn, s3 = client("stepfunctions"), client("s3")
    if _exists(s3, job.output_location):
        assert job.output_location is not None
        job_outcomes.succeed_from_location(store, sfn, s3, job, job.output_location)
        return "recovered_result"
    if _exists(s3, job.failure_location):
        job_outcomes.fail(store, sfn, job, job_outcomes.GPU_JOB_FAILED, f"failed (see {job.failure_location})")
        return "recovered_failure"
    job_outcomes.fail(store, sfn, job, job_outcomes.GPU_JOB_TIMED_OUT, "no outcome within RequestTTL + timeout")
    return "timed_out"


def reconcile(
    now: float, time_left_ms: Callable[[], int] | None = None, max_jobs: int = MAX_JOBS_PER_RUN
) -> dict[str, int]:
    """Settle the open jobs past their deadline, at most `max_jobs` of them and while `time_left_ms()` allows."""
    config = load(SETTINGS)
    store = GpuJobStore(client("dynamodb"), config.jobs_table_name)
    deadline = config.request_ttl_seconds + config.invocation_timeout_seconds + config.reconcile_grace_seconds
    counts: dict[str, int] = {}

    def count(outcome: str) -> None:
        counts[outcome] = counts.get(outcome, 0) + 1

    def out_of_time() -> bool:
        return time_left_ms is not None and time_left_ms() < STOP_WITH_MS_LEFT

    read, start_key = 0, None
    while read < max_jobs and not out_of_time():
        limit = min(PAGE_SIZE, max_jobs - read)
        jobs, start_key = store.open_jobs_page(now - deadline, limit, start_key)
        read += limit
        for job in jobs:
            if out_of_time():
                break
            try:
                outcome = reconcile_job(store, job)
            except Exception as error:  # this job waits for the next run; the others go on
                # The error's kind only: a service's message may echo the task token.
                reason = transient_reason(error) or type(error).__name__
                logger.warning("reconciling a job failed", extra={"job_id": job.job_id, "error": reason})
                outcome = "failed_to_settle"
            count(outcome)
            logger.warning("reconciled a job without an outcome", extra={"job_id": job.job_id, "outcome": outcome})
        if start_key is None:
            break
    if out_of_time():
        count("stopped_early")
    for outcome, value in counts.items():
        metrics.add_metric(name=f"Reconciled_{outcome}", unit=MetricUnit.Count, value=value)
    return counts


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    import time

    return reconcile(time.time(), context.get_remaining_time_in_millis)
