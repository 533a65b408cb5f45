"""`automatic_checks`: the tolerance of the generated-output checks."""

from pydantic import Field

from functions.adapters.aws.settings import LambdaSettings


class ChecksSettings(LambdaSettings):
    """`automatic_checks`: reads the generated images from the work bucket."""

    max_pixel_difference: int = Field(default=2, ge=0, le=255, description="Kept product pixels may differ this much.")
