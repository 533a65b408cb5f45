"""Each Lambda's environment as a pydantic-settings model. The CDK stack sets the same names (upper case).

Field names are the environment variable names in lower case, so `grep -ri ledger_table_name` finds both sides.
"""

from functools import cache
from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_INTAKE_PREFIX = "incoming/"


class _LambdaSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)


class IngestSettings(_LambdaSettings):
    """`ingest`: SQS batch of S3 notifications -> one execution per object version."""

    ledger_table_name: str = Field(min_length=3)
    state_machine_arn: str = Field(min_length=20)
    intake_prefix: str = DEFAULT_INTAKE_PREFIX


class PrepareSettings(_LambdaSettings):
    """`prepare` (container image): intake + background removal + packshot, derived files to the work bucket."""

    work_bucket: str = Field(min_length=3)
    intake_prefix: str = DEFAULT_INTAKE_PREFIX
    background_spec: str = "rembg:u2net"
    catalog_models_dir: str = "/opt/models"
    commercial: bool = True
    packshot_preset: str = "white-square"
    packshot_size: int = 2000
    reviewers: str = Field(default="", description="Comma-separated reviewer emails (the stack's context).")
    brand_profile_uri: str | None = Field(default=None, description="s3:// URI of the brand's BrandProfile JSON.")


class GpuJobSettings(_LambdaSettings):
    """`submit_gpu_job`, `gpu_job_outcome`, `reconcile_gpu_jobs`: the async endpoint and the job store."""

    jobs_table_name: str = Field(min_length=3)
    work_bucket: str = Field(min_length=3)
    endpoint_name: str = Field(min_length=1)
    request_ttl_seconds: int = Field(default=2 * 3600, ge=60, le=6 * 3600)
    invocation_timeout_seconds: int = Field(default=1200, ge=1, le=3600)
    reconcile_grace_seconds: int = Field(default=600, ge=0)


class ChecksSettings(_LambdaSettings):
    """`automatic_checks`: reads the generated images from the work bucket."""

    max_pixel_difference: int = Field(default=2, ge=0, le=255, description="Kept product pixels may differ this much.")


class PublishSettings(_LambdaSettings):
    """`publish`: approved images to the output bucket, rejections to the feedback dataset."""

    output_bucket: str = Field(min_length=3)
    approved_prefix: str = "approved/"
    feedback_prefix: str = "feedback/"


SettingsT = TypeVar("SettingsT", bound=_LambdaSettings)


@cache
def load(kind: type[SettingsT]) -> SettingsT:
    """Read once per execution environment; tests call `load.cache_clear()` after changing the environment."""
    return kind()
