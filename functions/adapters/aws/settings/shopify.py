"""`shopify_webhook` and `shopify_ingest`: the webhook's secret and queue, the intake table and bucket."""

from pydantic import Field

from functions.adapters.aws.settings import DEFAULT_INTAKE_PREFIX, LambdaSettings


class ShopifyWebhookSettings(LambdaSettings):
    """`shopify_webhook`: verify, deduplicate, queue. The secret holds {"current", "previous", "previous_until"}."""

    shopify_secret_id: str = Field(min_length=1)
    shopify_table_name: str = Field(min_length=3)
    shopify_queue_url: str = Field(min_length=8)
    shopify_brand: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")
    shopify_max_body_bytes: int = Field(default=512 * 1024, ge=1024, le=10 * 2**20)


class ShopifyIngestSettings(LambdaSettings):
    """`shopify_ingest`: queued product events (and EventBridge ones) -> images under incoming/<brand>/<handle>/."""

    shopify_table_name: str = Field(min_length=3)
    shopify_brand: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")
    intake_bucket: str = Field(min_length=3)
    intake_prefix: str = DEFAULT_INTAKE_PREFIX
    brands_uri: str = Field(
        pattern=r"^s3://[a-z0-9.\-]{3,63}/.*$", description="The brand store: <brand>/shopify.json holds the settings."
    )
