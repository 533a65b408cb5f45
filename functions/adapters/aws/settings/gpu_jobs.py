"""The GPU job handlers: the async endpoint and the job store."""

from pydantic import Field

from functions.adapters.aws.settings import LambdaSettings


class GpuJobSettings(LambdaSettings):
    """`submit_gpu_job`, `gpu_job_outcome`, `reconcile_gpu_jobs`: the async endpoint and the job store."""

    jobs_table_name: str = Field(min_length=3)
    work_bucket: str = Field(min_length=3)
    endpoint_name: str = Field(min_length=1)
    request_ttl_seconds: int = Field(default=2 * 3600, ge=60, le=6 * 3600)
    invocation_timeout_seconds: int = Field(default=1200, ge=1, le=3600)
    reconcile_grace_seconds: int = Field(default=600, ge=0)
