"""Requests to, and results from, the GPU jobs (SageMaker async endpoint or the in-process worker)."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from ._base import Contract
from .product import GarmentCategory, JobKind
from .records import ProcessingError, Status

# s3://bucket/key or file:///absolute/path
Uri = Annotated[str, Field(pattern=r"^(s3://[a-z0-9.\-]{3,63}/.+|file:///.+)$")]


class JobRequest(Contract):
    """One GPU job. `job_id` doubles as the SageMaker `InferenceId`, so it is safe to retry."""

    job_id: str = Field(pattern=r"^[A-Za-z0-9\-_]{8,128}$")
    kind: JobKind
    brand: str = Field(min_length=1, max_length=64)
    sku: str = Field(min_length=1, max_length=128)
    category: GarmentCategory = GarmentCategory.OTHER
    inputs: dict[str, Uri] = Field(description="Named inputs, e.g. product, mask, back, model.")
    output_prefix: Uri
    variations: int = Field(default=1, ge=1, le=8)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    strength: float | None = Field(default=None, gt=0.0, le=1.0, description="img2img strength, when used.")
    params: dict[str, Any] = Field(default_factory=dict)


class GpuJobTask(Contract):
    """One GPU job attempt, as the workflow's Map hands it to the submitter. Here, beside the JobRequest it carries,
    not with the workflow's other payloads: submit_gpu_job then loads no review contracts."""

    attempt: int = Field(default=0, ge=0, le=99)
    execution_arn: str | None = None
    job: JobRequest


class JobOutput(Contract):
    uri: Uri
    seed: int | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="What is needed to check the invariant.")


class JobResult(Contract):
    job_id: str
    kind: JobKind
    status: Status
    outputs: tuple[JobOutput, ...] = ()
    model_version: str | None = None
    adapter_versions: dict[str, str] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    error: ProcessingError | None = None
    finished_at: datetime | None = None
