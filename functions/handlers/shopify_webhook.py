"""Shopify's HTTPS webhooks (products/create, products/update) behind API Gateway: verify, deduplicate, queue.

Light on purpose: the answer must come within a second (Shopify retries 8 times over 4 hours and drops subscriptions
that keep failing), so no image is fetched here; `shopify_ingest` takes the queued work. API Gateway passes the body
base64-encoded (binary media type */*), so the HMAC is computed over the exact bytes Shopify signed.
"""

import base64
import binascii
import json
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws.clients import client
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.shopify import ShopifyWebhookSettings
from functions.adapters.aws.shopify_store import DynamoDBShopifyStore
from functions.stages.shopify_intake import WebhookAnswer, WebhookSecrets, receive_webhook
from schemas.shopify import ShopifyWork

# No Tracer: it imports the X-Ray SDK (~165 ms of cold start); the function's active tracing still records the call.
logger = Logger(service="shopify-webhook")
metrics = Metrics(namespace="CatalogImages", service="shopify-webhook")
SETTINGS = ShopifyWebhookSettings
SECRET_MAX_AGE_SECONDS = 300.0  # a rotated secret is picked up within five minutes ...
SECRET_REFRESH_AFTER_SECONDS = 30.0  # ... or at the first refused signature after half a minute

_secret_cache: dict[str, tuple[float, WebhookSecrets]] = {}


def _secrets(secret_id: str, max_age: float = SECRET_MAX_AGE_SECONDS) -> WebhookSecrets:
    cached = _secret_cache.get(secret_id)
    if cached is not None and time.monotonic() - cached[0] < max_age:
        return cached[1]
    text = client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    secrets = WebhookSecrets.from_document(text)
    _secret_cache[secret_id] = (time.monotonic(), secrets)
    return secrets


def _raw_body(event: dict[str, Any]) -> bytes | None:
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return str(body).encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def _response(answer: WebhookAnswer) -> dict[str, Any]:
    return {
        "statusCode": answer.status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"outcome": answer.outcome, "detail": answer.detail}),
    }


def answer_delivery(event: dict[str, Any]) -> WebhookAnswer:
    config = load(SETTINGS)
    raw = _raw_body(event)
    if raw is None:
        return WebhookAnswer(400, "invalid_body", "the body is not valid base64")
    headers = {str(k): str(v) for k, v in (event.get("headers") or {}).items()}
    store = DynamoDBShopifyStore(client("dynamodb"), config.shopify_table_name)

    def enqueue(work: ShopifyWork) -> None:
        client("sqs").send_message(QueueUrl=config.shopify_queue_url, MessageBody=work.model_dump_json())

    def deliver(secrets: WebhookSecrets) -> WebhookAnswer:
        return receive_webhook(
            raw,
            headers,
            secrets=secrets,
            brand=config.shopify_brand,
            store=store,
            enqueue=enqueue,
            max_body_bytes=config.shopify_max_body_bytes,
        )

    answer = deliver(_secrets(config.shopify_secret_id))
    if answer.outcome == "bad_hmac":
        # Refused deliveries change nothing, so trying a freshly read secret (just rotated?) is safe.
        answer = deliver(_secrets(config.shopify_secret_id, max_age=SECRET_REFRESH_AFTER_SECONDS))
    return answer


@logger.inject_lambda_context(log_event=False)  # the event holds the signature and the product
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    load(SETTINGS)  # a missing variable fails here, naming it
    answer = answer_delivery(event)
    extra: dict[str, Any] = {"outcome": answer.outcome, "status": answer.status, "detail": answer.detail}
    if answer.work is not None:
        extra.update(event_id=answer.work.event_id, product_id=answer.work.product.id, topic=answer.work.topic)
    logger.info("webhook answered", extra=extra)
    metrics.add_metric(name=f"Webhook_{answer.outcome}", unit=MetricUnit.Count, value=1)
    return _response(answer)
