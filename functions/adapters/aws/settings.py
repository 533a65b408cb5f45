"""Each Lambda's environment as a pydantic model. The CDK stack sets the same names (upper case).

Field names are the environment variable names in lower case, so `grep -ri ledger_table_name` finds both sides.
Every handler module names the model it reads as `SETTINGS` and loads it at entry (`load(SETTINGS)`), so a missing
or bad variable fails the invocation with the variable's name; a test checks the stack sets exactly these names.
"""

import os
from functools import cache
from typing import Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_INTAKE_PREFIX = "incoming/"


class _LambdaSettings(BaseModel):
    """Fields are read from the variables of the same name, any case. Plain pydantic rather than pydantic-settings,
    which cost ~60 ms of every light Lambda's cold start; fields are scalars (str, int, float, bool), as Lambda's
    environment is text."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    @classmethod
    def from_environment(cls) -> Self:
        environment = {name.lower(): value for name, value in os.environ.items()}
        return cls.model_validate({name: environment[name] for name in cls.model_fields if name in environment})


def _comma_separated(text: str) -> list[str]:
    """The non-empty items of a comma-separated setting, stripped."""
    return [item.strip() for item in text.split(",") if item.strip()]


class IngestSettings(_LambdaSettings):
    """`ingest`: SQS batch of S3 notifications -> one execution per object version."""

    ledger_table_name: str = Field(min_length=3)
    state_machine_arn: str = Field(min_length=20)
    intake_prefix: str = DEFAULT_INTAKE_PREFIX


class BackfillSettings(IngestSettings):
    """`backfill_batch`: a Distributed Map's batch of existing objects -> ingest's start, paced for the endpoint."""

    backfill_seconds_per_image: float = Field(
        default=0.0, ge=0.0, le=3600.0, description="A batch child waits this long per started image (pacing)."
    )


class PrepareSettings(_LambdaSettings):
    """`prepare` (container image): intake + background removal + packshot, derived files to the work bucket."""

    work_bucket: str = Field(min_length=3)
    intake_prefix: str = DEFAULT_INTAKE_PREFIX
    background_spec: str = "rembg:u2net"
    catalog_models_dir: str = "/opt/models"
    commercial: bool = True
    default_jobs: str = Field(default="packshot", description="Jobs for SKUs whose product.json names none.")
    packshot_preset: str = "white-square"
    packshot_size: int = Field(default=2000, ge=64, le=10000)
    packshot_fill_ratio: float = Field(default=0.85, gt=0.0, le=1.0)
    packshot_format: str = Field(default="", description="jpeg | png | webp; empty: the preset's own.")
    packshot_quality: int = Field(default=92, ge=1, le=100)
    max_megapixels: float = Field(default=50.0, gt=0.0)
    reviewers: str = Field(default="", description="Comma-separated reviewer emails (the stack's context).")
    brands_uri: str = Field(
        pattern=r"^s3://[a-z0-9.\-]{3,63}/.*$",
        description="The brand store: s3://bucket/brands/, holding <brand>/profile.json and its adapters.",
    )

    @field_validator("reviewers")
    @classmethod
    def _reviewers_are_addresses(cls, reviewers: str) -> str:
        # Checked in full here, where the stack's addresses enter; the workflow's contracts then check only their shape.
        from pydantic import EmailStr, TypeAdapter, ValidationError

        addresses = TypeAdapter(EmailStr)
        for address in _comma_separated(reviewers):
            try:
                addresses.validate_python(address)
            except ValidationError as error:
                raise ValueError(f"{address!r} is not an e-mail address ({error.errors()[0]['msg']})") from None
        return reviewers

    def reviewer_list(self) -> list[str]:
        return _comma_separated(self.reviewers)


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
    shopify_admin_secret_id: str = Field(
        default="", description='The Admin token secret {"shop", "access_token"}; empty, or no shop in it: no store.'
    )
    brands_uri: str = Field(default="", description="The brand store: <brand>/publishing.json, the brand's choices.")


class ReviewSettings(_LambdaSettings):
    """The review functions: the review table, link signing keys, the SES sender and the review API's URL."""

    review_table_name: str = Field(min_length=3)
    review_keys_secret_id: str = Field(min_length=1)
    review_sender: str = Field(min_length=3, description="SES-verified From address.")
    review_base_url: str = Field(min_length=8, description="Public URL of the review API, stage included.")
    review_link_ttl_seconds: int = Field(default=72 * 3600, ge=600)
    review_remind_before_seconds: int = Field(default=24 * 3600, ge=0)
    review_image_url_seconds: int = Field(default=300, ge=30, le=3600)


class ShopifyWebhookSettings(_LambdaSettings):
    """`shopify_webhook`: verify, deduplicate, queue. The secret holds {"current", "previous", "previous_until"}."""

    shopify_secret_id: str = Field(min_length=1)
    shopify_table_name: str = Field(min_length=3)
    shopify_queue_url: str = Field(min_length=8)
    shopify_brand: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")
    shopify_max_body_bytes: int = Field(default=512 * 1024, ge=1024, le=10 * 2**20)


class ShopifyIngestSettings(_LambdaSettings):
    """`shopify_ingest`: queued product events (and EventBridge ones) -> images under incoming/<brand>/<handle>/."""

    shopify_table_name: str = Field(min_length=3)
    shopify_brand: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")
    intake_bucket: str = Field(min_length=3)
    intake_prefix: str = DEFAULT_INTAKE_PREFIX
    brands_uri: str = Field(
        pattern=r"^s3://[a-z0-9.\-]{3,63}/.*$", description="The brand store: <brand>/shopify.json holds the settings."
    )


SettingsT = TypeVar("SettingsT", bound=_LambdaSettings)


@cache
def load(kind: type[SettingsT]) -> SettingsT:
    """Read once per execution environment; tests call `load.cache_clear()` after changing the environment."""
    return kind.from_environment()
