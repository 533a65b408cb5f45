"""`publish`: the output bucket, its prefixes, and the Shopify store when one is connected."""

from pydantic import Field

from functions.adapters.aws.settings import LambdaSettings


class PublishSettings(LambdaSettings):
    """`publish`: approved images to the output bucket, rejections to the feedback dataset."""

    output_bucket: str = Field(min_length=3)
    approved_prefix: str = "approved/"
    feedback_prefix: str = "feedback/"
    shopify_admin_secret_id: str = Field(
        default="", description='The Admin token secret {"shop", "access_token"}; empty, or no shop in it: no store.'
    )
    brands_uri: str = Field(default="", description="The brand store: <brand>/publishing.json, the brand's choices.")
