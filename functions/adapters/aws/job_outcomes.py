"""Resuming the execution that waits on a GPU job: SendTaskSuccess with the JobResult, or SendTaskFailure.

Shared by the SNS outcome handler and the reconciler, so both settle a job the same way and at most once.
"""

import json
import logging
from typing import Any

from pydantic import ValidationError

from functions.adapters.aws.job_store import OPEN_STATES, GpuJobStore, JobState, StoredJob
from functions.adapters.aws.s3_storage import s3_location
from schemas import JobResult, Status

logger = logging.getLogger(__name__)

GPU_JOB_FAILED = "GpuJobFailed"  # the state machine retries this error with a new attempt
GPU_JOB_TIMED_OUT = "GpuJobTimedOut"  # the reconciler found no outcome in time; retried the same way
# The execution is gone or the token was already used: the job is closed for the workflow, nothing to do.
TASK_ALREADY_CLOSED = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
_MAX_CAUSE = 32_768


def read_job_result(s3: Any, output_location: str) -> JobResult:
    bucket, key = s3_location(output_location)
    return JobResult.model_validate_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def task_output(result: JobResult) -> dict[str, Any]:
    """What the Map iteration returns for a finished job: the JobResult with its model and adapter versions, which
    the review item and the feedback record carry on (timings stay in the result file: state is capped at 256 KB).
    """
    return result.model_dump(mode="json", exclude={"timings_s"})


def _send(sfn: Any, job: StoredJob, method: str, **kwargs: Any) -> None:
    try:
        getattr(sfn, method)(taskToken=job.task_token, **kwargs)
    except sfn.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code not in TASK_ALREADY_CLOSED:
            raise
        # Log the code only: the message may echo the token.
        logger.warning("the waiting task is already closed", extra={"job_id": job.job_id, "error_code": code})


def succeed(store: GpuJobStore, sfn: Any, job: StoredJob, result: JobResult) -> bool:
    if job.state not in OPEN_STATES:
        return False
    if result.status is not Status.SUCCEEDED:
        reason = result.error.code + ": " + result.error.message if result.error else "the job reported failure"
        return fail(store, sfn, job, GPU_JOB_FAILED, reason)
    _send(sfn, job, "send_task_success", output=json.dumps(task_output(result), separators=(",", ":")))
    return store.settle(job.job_id, JobState.SUCCEEDED)


def fail(store: GpuJobStore, sfn: Any, job: StoredJob, error: str, cause: str) -> bool:
    if job.state not in OPEN_STATES:
        return False
    _send(sfn, job, "send_task_failure", error=error, cause=f"job {job.job_id}: {cause}"[:_MAX_CAUSE])
    return store.settle(job.job_id, JobState.FAILED)


def succeed_from_location(store: GpuJobStore, sfn: Any, s3: Any, job: StoredJob, output_location: str) -> bool:
    """Read the endpoint's response (a JobResult) and settle the job with it; an unreadable one fails the job."""
    try:
        result = read_job_result(s3, output_location)
    except (ValidationError, ValueError) as error:
        return fail(store, sfn, job, GPU_JOB_FAILED, f"unreadable result at {output_location}: {error}")
    if result.job_id != job.job_id:
        return fail(store, sfn, job, GPU_JOB_FAILED, f"the result at {output_location} is for job {result.job_id}")
    return succeed(store, sfn, job, result)
