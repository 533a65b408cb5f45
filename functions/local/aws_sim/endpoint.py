"""The SageMaker asynchronous endpoint's stand-in: the in-process GPU worker, one job at a time, in the sim's thread.

`InvokeEndpointAsync` (called by the real submit handler) answers what the endpoint would: output and failure
locations under the endpoint config's `S3OutputPath` / `S3FailurePath` (`<uuid>.out`, `<uuid>-error.out`). The sim
then finds the job in flight in the GPU jobs table, runs it, writes the container's answer (the JobResult) to the
output location, and publishes SageMaker's documented success or error notification to the config's SNS topic,
delivering it to the topic's subscribed Lambda (the real outcome handler) as SNS would.
"""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import boto3

from functions.adapters.aws.job_store import GpuJobStore, JobState
from functions.adapters.aws.s3_storage import s3_location
from functions.local.aws_sim.stack import REGION, StackNames, SynthesizedStack
from schemas import JobRequest, JobResult, ProcessingError, Status

DeliverNotification = Callable[[str, str], None]  # (topic ARN, message JSON)


@dataclass(frozen=True)
class AsyncEndpointConfig:
    """What the template's EndpointConfig says about async inference."""

    endpoint_name: str
    output_path: str
    failure_path: str
    success_topic: str
    error_topic: str


def async_endpoint_config(stack: SynthesizedStack, names: StackNames) -> AsyncEndpointConfig:
    configs = stack.resources("AWS::SageMaker::EndpointConfig")
    endpoints = stack.resources("AWS::SageMaker::Endpoint")
    if len(configs) != 1 or len(endpoints) != 1:
        raise ValueError(f"expected one async endpoint, found {len(endpoints)} endpoint(s), {len(configs)} config(s)")
    output = names.resolve(next(iter(configs.values()))["Properties"]["AsyncInferenceConfig"]["OutputConfig"])
    endpoint_id = next(iter(endpoints))
    return AsyncEndpointConfig(
        endpoint_name=names.get_att(endpoint_id, "EndpointName"),
        output_path=str(output["S3OutputPath"]).rstrip("/"),
        failure_path=str(output.get("S3FailurePath") or output["S3OutputPath"]).rstrip("/"),
        success_topic=str(output["NotificationConfig"]["SuccessTopic"]),
        error_topic=str(output["NotificationConfig"]["ErrorTopic"]),
    )


@dataclass(frozen=True)
class _Accepted:
    input_location: str
    output_location: str
    failure_location: str
    received_at: str


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GpuEndpoint:
    def __init__(
        self, config: AsyncEndpointConfig, models: str | None, jobs_table: str, buckets: tuple[str, ...]
    ) -> None:
        """`buckets`: where jobs may read and write (the work and brand-store buckets), as the endpoint may."""
        self.config, self.models, self.jobs_table, self.buckets = config, models, jobs_table, buckets
        self._accepted: dict[str, _Accepted] = {}  # by output location, which the job store keeps
        self._by_input: dict[str, _Accepted] = {}
        self._lock = threading.Lock()
        self._settled: set[str] = set()
        self._worker: Any = None

    @contextmanager
    def attached_to_moto(self) -> Iterator[None]:
        """moto's InvokeEndpointAsync answers with this endpoint's locations (and writes nothing) for the duration."""
        from moto.sagemakerruntime.models import SageMakerRuntimeBackend

        endpoint = self

        def invoke_async(backend: Any, endpoint_name: str, input_location: str) -> tuple[str, str]:
            return endpoint.accept(endpoint_name, input_location)

        with mock.patch.object(SageMakerRuntimeBackend, "invoke_endpoint_async", invoke_async):
            yield

    def accept(self, endpoint_name: str, input_location: str) -> tuple[str, str]:
        if endpoint_name != self.config.endpoint_name:
            raise ValueError(f"no endpoint {endpoint_name!r}; the stack has {self.config.endpoint_name!r}")
        with self._lock:
            known = self._by_input.get(input_location)  # the same request again: the same locations, as moto does
            if known is None:
                name = str(uuid.uuid4())
                known = _Accepted(
                    input_location,
                    f"{self.config.output_path}/{name}.out",
                    f"{self.config.failure_path}/{name}-error.out",
                    _iso_now(),
                )
                self._by_input[input_location] = self._accepted[known.output_location] = known
        return known.output_location, known.failure_location

    def run_next_job(self, deliver: DeliverNotification) -> JobResult | None:
        """Run one job the submit handler has put in flight, if there is one; returns its result."""
        store = GpuJobStore(boto3.client("dynamodb", region_name=REGION), self.jobs_table)
        for job in store.open_jobs_submitted_before(time.time() + 3600):
            if job.state is not JobState.IN_FLIGHT or job.job_id in self._settled or not job.output_location:
                continue  # `registered`: the submit handler has not finished recording the invoke yet
            with self._lock:
                accepted = self._accepted.get(job.output_location)
            if accepted is None:
                continue
            self._settled.add(job.job_id)
            return self._run(job.job_id, accepted, deliver)
        return None

    def _run(self, job_id: str, accepted: _Accepted, deliver: DeliverNotification) -> JobResult:
        s3 = boto3.client("s3", region_name=REGION)
        bucket, key = s3_location(accepted.input_location)
        request = JobRequest.model_validate_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        result = self._worker_result(request)
        if result.status is Status.SUCCEEDED:
            # The container answered 200 with the JobResult: the endpoint stores the body at the output location.
            bucket, key = s3_location(accepted.output_location)
            s3.put_object(
                Bucket=bucket, Key=key, Body=result.model_dump_json().encode(), ContentType="application/json"
            )
            deliver(self.config.success_topic, self._notification(job_id, accepted, request, result=result))
        else:
            # The container answered an error status with its error body: stored at the failure location.
            error = result.error or ProcessingError(code="internal_error", message="the job failed")
            body = {"error": {"code": error.code, "message": error.message}, "job_id": request.job_id}
            bucket, key = s3_location(accepted.failure_location)
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json")
            deliver(self.config.error_topic, self._notification(job_id, accepted, request, error=error))
        return result

    def _worker_result(self, request: JobRequest) -> JobResult:
        if self.models is None:
            return JobResult(
                job_id=request.job_id,
                kind=request.kind,
                status=Status.FAILED,
                error=ProcessingError(code="no_models", message="GPU jobs need --models (tiny or a config file)."),
            )
        if self._worker is None:
            from functions.adapters.local.gpu_worker import InProcessGpuWorker

            self._worker = InProcessGpuWorker(self.models, buckets=self.buckets)
        result: JobResult = self._worker.run(request)
        return result

    def _notification(
        self,
        job_id: str,
        accepted: _Accepted,
        request: JobRequest,
        result: JobResult | None = None,
        error: ProcessingError | None = None,
    ) -> str:
        """SageMaker async inference's SNS message (documented format), with our job id as the InferenceId."""
        message: dict[str, Any] = {
            "awsRegion": REGION,
            "eventTime": _iso_now(),
            "receivedTime": accepted.received_at,
            "invocationStatus": "Completed" if result is not None else "Failed",
            "requestParameters": {
                "accept": "application/json",
                "contentType": "application/json",
                "endpointName": self.config.endpoint_name,
                "inputLocation": accepted.input_location,
            },
            "inferenceId": job_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
        if result is not None:
            message["responseParameters"] = {
                "contentType": "application/json",
                "outputLocation": accepted.output_location,
            }
        else:
            assert error is not None
            message["responseParameters"] = {"contentType": "application/json"}
            message["failureReason"] = (
                f'ClientError: Received client error from primary with message "{error.code}: {error.message}". '
                f"See {accepted.failure_location}."
            )
        return json.dumps(message)
