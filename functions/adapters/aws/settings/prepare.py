"""`prepare`: the work bucket, the background engine, the packshot and the reviewers."""

from pydantic import Field, field_validator

from functions.adapters.aws.settings import DEFAULT_INTAKE_PREFIX, LambdaSettings


def _comma_separated(text: str) -> list[str]:
    """The non-empty items of a comma-separated setting, stripped."""
    return [item.strip() for item in text.split(",") if item.strip()]


class PrepareSettings(LambdaSettings):
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
