"""The review functions (`review_notify`, `review_api`, `review_schedule`): the review table, keys, sender and URL."""

from pydantic import Field

from functions.adapters.aws.settings import LambdaSettings


class ReviewSettings(LambdaSettings):
    """The review functions: the review table, link signing keys, the SES sender and the review API's URL."""

    review_table_name: str = Field(min_length=3)
    review_keys_secret_id: str = Field(min_length=1)
    review_sender: str = Field(min_length=3, description="SES-verified From address.")
    review_base_url: str = Field(min_length=8, description="Public URL of the review API, stage included.")
    review_link_ttl_seconds: int = Field(default=72 * 3600, ge=600)
    review_remind_before_seconds: int = Field(default=24 * 3600, ge=0)
    review_image_url_seconds: int = Field(default=300, ge=30, le=3600)
