"""Scheduled: GPU jobs with no outcome after RequestTTL + invocation timeout (+ grace) are settled.

A result or failure object that exists (its notification was lost) settles the job as the notification would
have; otherwise the task fails with `GpuJobTimedOut`, which the state machine retries as a new attempt (a fresh
job id) and, when retries are spent, routes to its failed state.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import job_outcomes, settings
from functions.adapters.aws.clients import client
from functions.adapters.aws.job_store import GpuJobStore, StoredJob
from functions.adapters.aws.s3_storage import s3_location

logger = Logger(service="gpu-jobs")
tracer = Tracer(service="gpu-jobs")
metrics = Metrics(namespace="CatalogImages", service="gpu-jobs")
SETTINGS = settings.GpuJobSettings


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


def reconcile(now: float) -> dict[str, int]:
    config = settings.load(SETTINGS)
    store = GpuJobStore(client("dynamodb"), config.jobs_table_name)
    deadline = config.request_ttl_seconds + config.invocation_timeout_seconds + config.reconcile_grace_seconds
    counts: dict[str, int] = {}
    for job in store.open_jobs_submitted_before(now - deadline):
        outcome = reconcile_job(store, job)
        counts[outcome] = counts.get(outcome, 0) + 1
        logger.warning("reconciled a job without an outcome", extra={"job_id": job.job_id, "outcome": outcome})
    for outcome, count in counts.items():
        metrics.add_metric(name=f"Reconciled_{outcome}", unit=MetricUnit.Count, value=count)
    return counts


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    import time

    return reconcile(time.time())
