"""What the review Lambdas share: settings from the environment, AWS clients and the review service, built once per
execution environment (cold start) and reused by warm invocations.
"""

import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse, urlsplit

import boto3
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field

from functions.review.page import ImageUrl
from functions.review.resume import StepFunctionsResumer
from functions.review.service import ReviewService
from functions.review.signing import LinkParams, load_secrets_manager_keys
from functions.review.store import DynamoDBReviewStore, StoredReview
from schemas.review import ReviewItem

IMAGE_KINDS = ("original", "generated", "preview")


class ReviewSettings(BaseModel):
    """Environment variables of the review Lambdas (the CDK stack sets the same names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    table_name: str = Field(alias="REVIEW_TABLE_NAME", min_length=3)
    keys_secret_id: str = Field(alias="REVIEW_KEYS_SECRET_ID", min_length=1)
    sender: str = Field(alias="REVIEW_SENDER", description="SES-verified From address.")
    base_url: str = Field(alias="REVIEW_BASE_URL", description="Public URL of the review API, stage included.")
    link_ttl_seconds: int = Field(default=72 * 3600, alias="REVIEW_LINK_TTL_SECONDS", ge=600)
    remind_before_seconds: int = Field(default=24 * 3600, alias="REVIEW_REMIND_BEFORE_SECONDS", ge=0)
    image_url_seconds: int = Field(default=300, alias="REVIEW_IMAGE_URL_SECONDS", ge=30, le=3600)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ReviewSettings":
        return cls.model_validate(dict(os.environ if environ is None else environ))

    @property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    def link(self, params: LinkParams) -> str:
        return f"{self.base_url.rstrip('/')}/review/{params.review_id}?{params.query()}"

    def image_route(self, params: LinkParams, item: ReviewItem, kind: str) -> str:
        """A long-lived, signed route for emails: it redirects to a fresh 5-minute presigned URL when opened."""
        return f"{self.base_url.rstrip('/')}/review/{params.review_id}/image/{item.item_id}/{kind}?{params.query()}"


@lru_cache(maxsize=1)
def settings() -> ReviewSettings:
    return ReviewSettings.from_env()


@lru_cache(maxsize=8)
def client(name: str) -> Any:
    if name == "s3":
        # SigV4 on the regional virtual-hosted endpoint: presigned URLs SigV2 would make are deprecated.
        return boto3.client("s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}))
    return boto3.client(name)


@lru_cache(maxsize=1)
def review_service() -> ReviewService:
    config = settings()
    keys = load_secrets_manager_keys(client("secretsmanager"), config.keys_secret_id)
    store = DynamoDBReviewStore(client("dynamodb"), config.table_name)
    return ReviewService(store, keys, StepFunctionsResumer(client("stepfunctions")), batches=store)


def reset() -> None:
    """Forget cached settings, clients and keys (tests; a rotated key is also picked up by a new environment)."""
    settings.cache_clear()
    client.cache_clear()
    review_service.cache_clear()


def image_location(item: ReviewItem, kind: str) -> tuple[str, str]:
    uri = {
        "original": item.original,
        "generated": item.generated,
        "preview": item.details.generated_thumbnail or item.generated,
    }[kind]
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"review images on AWS are s3:// URIs, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


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
