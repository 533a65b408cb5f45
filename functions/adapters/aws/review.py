"""The review service on AWS: DynamoDB store, Secrets Manager keys, Step Functions resume, presigned image URLs.

Built once per execution environment (cold start) and reused by warm invocations of the review functions.
"""

import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from functions.adapters.aws.clients import client
from functions.adapters.aws.review_store import DynamoDBReviewStore
from functions.adapters.aws.s3_storage import s3_location
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.review import ReviewSettings
from functions.adapters.aws.step_functions import StepFunctionsResumer
from functions.review.service import ReviewService
from functions.review.signing import IMAGE_KINDS, ImageParams, LinkParams, SigningKeys, load_secrets_manager_keys
from functions.review.store import StoredReview
from schemas.review import ReviewItem

if TYPE_CHECKING:  # the page module itself only where a page is served (review_api)
    from functions.review.page import ImageUrl

__all__ = ["IMAGE_KINDS", "image_location", "image_route", "presigned_image_urls", "review_link", "review_service"]


def base_path(config: ReviewSettings) -> str:
    return urlsplit(config.review_base_url).path.rstrip("/")


def review_link(config: ReviewSettings, params: LinkParams) -> str:
    return f"{config.review_base_url.rstrip('/')}/review/{params.review_id}?{params.query()}"


def image_route(config: ReviewSettings, image: ImageParams) -> str:
    """A long-lived route for emails: it redirects to a fresh 5-minute presigned URL when opened. It carries an
    image-only capability for this one image, so whoever fetches it (a mail proxy) cannot open the page or decide."""
    base = config.review_base_url.rstrip("/")
    item_id = quote(image.item_id, safe="")
    return f"{base}/review/{image.review_id}/image/{item_id}/{image.kind}?{image.query()}"


# A warm environment re-reads the signing keys this often, so a rotation (cdk/README.md) reaches every function
# within this time without a redeploy; a staged key is listed everywhere before any function signs with it.
KEYS_MAX_AGE_SECONDS = 300.0


@lru_cache(maxsize=1)
def _review_service() -> tuple[ReviewService, list[float]]:
    config = load(ReviewSettings)
    keys = load_secrets_manager_keys(client("secretsmanager"), config.review_keys_secret_id)
    store = DynamoDBReviewStore(client("dynamodb"), config.review_table_name)
    service = ReviewService(store, keys, StepFunctionsResumer(client("stepfunctions")), batches=store)
    return service, [time.monotonic()]


def review_service() -> ReviewService:
    service, loaded_at = _review_service()
    if time.monotonic() - loaded_at[0] >= KEYS_MAX_AGE_SECONDS:
        config = load(ReviewSettings)
        service.keys = load_secrets_manager_keys(client("secretsmanager"), config.review_keys_secret_id)
        loaded_at[0] = time.monotonic()
    return service


@lru_cache(maxsize=1)
def keyless_review_service() -> ReviewService:
    """The service for storing new reviews only (the notify task): it never reads the signing-keys secret.

    `create` returns a link signed with a throwaway in-memory key that nothing verifies; the caller discards it (the
    digest signs the real link). Anything that opens, decides or emails uses `review_service()` instead.
    """
    config = load(ReviewSettings)
    store = DynamoDBReviewStore(client("dynamodb"), config.review_table_name)
    return ReviewService(store, SigningKeys.generate("unused"), StepFunctionsResumer(client("stepfunctions")))


def reset() -> None:
    """Forget cached settings, clients and keys (tests; a rotated key is also picked up by a new environment)."""
    load.cache_clear()
    client.cache_clear()
    _review_service.cache_clear()
    keyless_review_service.cache_clear()


def image_location(item: ReviewItem, kind: str) -> tuple[str, str]:
    uri = {
        "original": item.original,
        "generated": item.generated,
        "preview": item.details.generated_thumbnail or item.generated,
    }[kind]
    return s3_location(uri)


def presigned_image_urls(s3: Any, expires_in: int) -> Callable[[StoredReview, LinkParams], "ImageUrl"]:
    """The page's images: presigned GETs that die in minutes, so a leaked page source does not leak the images."""

    def for_review(review: StoredReview, params: LinkParams) -> "ImageUrl":
        def url(item: ReviewItem, kind: str) -> str:
            bucket, key = image_location(item, kind)
            return str(
                s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in)
            )

        return url

    return for_review
