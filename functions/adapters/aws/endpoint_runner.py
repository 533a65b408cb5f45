"""GPU jobs on the deployed SageMaker asynchronous endpoint, waited for in the calling process: the `GpuJobRunner`
`catalog compare --endpoint` and the promotion gate use on AWS.

The pipeline submits and is called back (SNS -> Step Functions); a comparison is a person at a terminal, so here the
request JSON goes to S3, `InvokeEndpointAsync` takes it with our job id as `InferenceId` (the same call
`handlers/submit_gpu_job` makes), and the runner polls the `OutputLocation` (a `JobResult`, what `/invocations`
answers) or the `FailureLocation` until one appears or the time is up. It never raises: a failure, a timeout or an
unreadable answer is a `failed` JobResult, which the comparison records in its cell.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from functions.adapters.aws.s3_storage import s3_location
from schemas import JobRequest, JobResult, ProcessingError, Status


class AsyncEndpointRunner:
    def __init__(
        self,
        endpoint_name: str,
        requests_prefix: str,
        *,
        s3: Any,
        runtime: Any,
        timeout_s: float = 1800.0,
        poll_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not requests_prefix.startswith("s3://"):
            raise ValueError(f"the endpoint's requests go to S3: expected s3://bucket/prefix/, got {requests_prefix!r}")
        self.endpoint_name = endpoint_name
        self.requests_prefix = requests_prefix.rstrip("/") + "/"
        self.s3 = s3
        self.runtime = runtime
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._sleep = sleep

    def run(self, request: JobRequest) -> JobResult:
        input_location = f"{self.requests_prefix}{request.job_id}.json"
        bucket, key = s3_location(input_location)
        try:
            self.s3.put_object(
                Bucket=bucket, Key=key, Body=request.model_dump_json().encode(), ContentType="application/json"
            )
            response = self.runtime.invoke_endpoint_async(
                EndpointName=self.endpoint_name,
                InputLocation=input_location,
                ContentType="application/json",
                Accept="application/json",
                InferenceId=request.job_id,
                InvocationTimeoutSeconds=int(min(3600, self.timeout_s)),
            )
        except Exception as error:  # botocore's ClientError and friends: the cell records why, the grid goes on
            code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
            return _failed(request, "unavailable", f"the endpoint {self.endpoint_name} refused the job ({code})")
        deadline = time.monotonic() + self.timeout_s
        while True:
            answer = self._read(response.get("OutputLocation"))
            if answer is not None:
                try:
                    return JobResult.model_validate_json(answer)
                except ValidationError:
                    return _failed(request, "internal_error", "the endpoint's answer is not a JobResult")
            failure = self._read(response.get("FailureLocation"))
            if failure is not None:
                return _failed(request, "internal_error", _failure_message(failure))
            if time.monotonic() >= deadline:
                return _failed(request, "timeout", f"no answer from {self.endpoint_name} in {self.timeout_s:g} s")
            self._sleep(self.poll_s)

    def _read(self, uri: str | None) -> bytes | None:
        if not uri:
            return None
        bucket, key = s3_location(uri)
        try:
            body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body


def _failure_message(body: bytes) -> str:
    try:
        raw = json.loads(body)
    except ValueError:
        return "the endpoint reported a failure"
    error = raw.get("error") if isinstance(raw, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    return "the endpoint reported a failure"


def _failed(request: JobRequest, code: str, message: str) -> JobResult:
    return JobResult(
        job_id=request.job_id,
        kind=request.kind,
        status=Status.FAILED,
        error=ProcessingError(code=code, message=message),
        finished_at=datetime.now(UTC),
    )
