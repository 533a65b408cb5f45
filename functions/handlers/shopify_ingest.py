"""Queued Shopify product events -> the product's new images (and a product.json) under incoming/<brand>/<handle>/
in the intake bucket, where the S3 notification and `ingest` take over: one execution per image version.

Messages are either our `ShopifyWork` (queued by `shopify_webhook`) or an EventBridge event from Shopify's partner
event source (the rule targets this queue); the latter is deduplicated here, on the same event id. A fetch that may
work later fails the message alone (partial batch response): SQS redelivers it, and after maxReceiveCount it lands in
the DLQ; images already written are recorded, so a retry adds nothing twice.
"""

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from functions.adapters.aws.clients import client
from functions.adapters.aws.s3_storage import S3Storage
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.shopify import ShopifyIngestSettings
from functions.adapters.aws.shopify_store import DynamoDBShopifyStore
from functions.adapters.aws.sqs_batch import partial_batch_response
from functions.errors import ConfigurationError, field_problems
from functions.stages.shopify_intake import ImageFetcher, ProductIntake, WebhookRefusedError, ingest_product
from functions.stages.shopify_intake import work_from_eventbridge as parse_eventbridge
from schemas.shopify import SHOPIFY_SETTINGS_NAME, ShopifySettings, ShopifyWork

logger = Logger(service="shopify-intake")
metrics = Metrics(namespace="CatalogImages", service="shopify-intake")
SETTINGS = ShopifyIngestSettings
# Hosts (`host:port`) fetched besides the brand's HTTPS image hosts. Empty when deployed; tests point it at a
# loopback image server, as `catalog shopify serve --allow-image-host` does.
EXTRA_IMAGE_HOSTS: tuple[str, ...] = ()


def brand_settings(config: ShopifyIngestSettings) -> ShopifySettings:
    """`<brands>/<brand>/shopify.json` from the brand store, or the defaults when there is none."""
    uri = f"{config.brands_uri.rstrip('/')}/{config.shopify_brand}/{SHOPIFY_SETTINGS_NAME}"
    try:
        return ShopifySettings.model_validate_json(S3Storage(client("s3")).read_bytes(uri))
    except FileNotFoundError:
        return ShopifySettings()
    except ValidationError as error:
        raise ConfigurationError(f"{uri}: {field_problems(error)}") from None


def ingest_message(body: str) -> ProductIntake | str:
    """One queue message; returns what intake did, or the code of a terminal refusal."""
    config = load(SETTINGS)
    store = DynamoDBShopifyStore(client("dynamodb"), config.shopify_table_name)
    message = json.loads(body)
    from_eventbridge = "detail-type" in message
    try:
        work = (
            parse_eventbridge(message, config.shopify_brand)
            if from_eventbridge
            else ShopifyWork.model_validate(message)
        )
    except WebhookRefusedError as refused:
        logger.warning("event refused", extra={"outcome": refused.code, "detail": str(refused)})
        return refused.code
    if from_eventbridge and not store.claim_event(work.event_id):
        logger.info("duplicate event", extra={"event_id": work.event_id})
        return "duplicate"
    shopify = brand_settings(config)
    try:
        result = ingest_product(
            work,
            intake_root=f"s3://{config.intake_bucket}/{config.intake_prefix.rstrip('/')}",
            store=store,
            writer=S3Storage(client("s3")),
            fetcher=ImageFetcher(shopify, EXTRA_IMAGE_HOSTS),
            settings=shopify,
        )
    except BaseException:
        if from_eventbridge:
            store.release_event(work.event_id)  # the redelivered message must get through
        raise
    if from_eventbridge:
        store.confirm_event(work.event_id)
    refusals = [{"image_id": i.image_id, "code": i.code, "detail": i.message} for i in result.images if i.code]
    logger.info(
        "product taken in",
        extra={
            "event_id": work.event_id,
            "product_id": work.product.id,
            "outcome": result.outcome,
            "images": result.counts(),
            "sidecar_written": result.sidecar_written,
            "refused": refusals,
            "detail": result.message,
        },
    )
    for status, count in result.counts().items():
        metrics.add_metric(name=f"ShopifyImages_{status}", unit=MetricUnit.Count, value=count)
    return result


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    load(SETTINGS)  # a missing variable fails the batch here, naming it
    return partial_batch_response(event, ingest_message)
