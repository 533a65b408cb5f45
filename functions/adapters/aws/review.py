"""The review service on AWS: DynamoDB store, Secrets Manager keys, Step Functions resume, presigned image URLs.

Built once per execution environment (cold start) and reused by warm invocations of the review functions.
"""

from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from functions.adapters.aws import settings
from functions.adapters.aws.clients import client
from functions.adapters.aws.s3_storage import s3_location
from functions.review.page import ImageUrl
from functions.review.resume import StepFunctionsResumer
from functions.review.service import ReviewService
from functions.review.signing import LinkParams, load_secrets_manager_keys
from functions.review.store import DynamoDBReviewStore, StoredReview
from schemas.review import ReviewItem

IMAGE_KINDS = ("original", "generated", "preview")


def base_path(config: settings.ReviewSettings) -> str:
    return urlsplit(config.review_base_url).path.rstrip("/")


def review_link(config: settings.ReviewSettings, params: LinkParams) -> str:
    return f"{config.review_base_url.rstrip('/')}/review/{params.review_id}?{params.query()}"


def image_route(config: settings.ReviewSettings, params: LinkParams, item: ReviewItem, kind: str) -> str:
    """A long-lived, signed route for emails: it redirects to a fresh 5-minute presigned URL when opened."""
    base = config.review_base_url.rstrip("/")
    return f"{base}/review/{params.review_id}/image/{item.item_id}/{kind}?{params.query()}"


@lru_cache(maxsize=1)
def review_service() -> ReviewService:
    config = settings.load(settings.ReviewSettings)
    keys = load_secrets_manager_keys(client("secretsmanager"), config.review_keys_secret_id)
    store = DynamoDBReviewStore(client("dynamodb"), config.review_table_name)
    return ReviewService(store, keys, StepFunctionsResumer(client("stepfunctions")), batches=store)


def reset() -> None:
    """Forget cached settings, clients and keys (tests; a rotated key is also picked up by a new environment)."""
    settings.load.cache_clear()
    client.cache_clear()
    review_service.cache_clear()


def image_location(item: ReviewItem, kind: str) -> tuple[str, str]:
    uri = {
        "original": item.original,
        "generated": item.generated,
        "preview": item.details.generated_thumbnail or item.generated,
    }[kind]
    return s3_location(uri)


def presigned_image_urls(s3: Any, expires_in: int) -> Callable[[StoredReview, LinkParams], ImageUrl]:
    """The page's images: presigned GETs that die in minutes, so a leaked page source does not leak the images."""

    def for_review(review: StoredReview, params: LinkParams) -> ImageUrl:
        def url(item: ReviewItem, kind: str) -> str:
            bucket, key = image_location(item, kind)
            return str(
                s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in)
            )

        return url

    return for_review
