"""The Shopify Lambdas against moto: API Gateway event -> `shopify_webhook` -> SQS -> `shopify_ingest` -> photos and
a product.json under incoming/<brand>/<handle>/ in the intake bucket, where the S3 notification takes over."""

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from functions.adapters.aws import settings
from functions.handlers import shopify_ingest, shopify_webhook
from tests import shopify_samples as samples

from .aws_fixtures import REGION, FakeContext, sqs_event

INTAKE = "catalog-intake"
BRANDS = "catalog-brands"
TABLE = "catalog-shopify"
SECRET_ID = "catalog/shopify-webhook"
PHOTO_PATH = "/s/files/1/0005/4838/0009/products/front.jpg"


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    """A loopback stand-in for Shopify's CDN, serving one small JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="JPEG")
    data = buffer.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            found = self.path.split("?")[0] == PHOTO_PATH
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def aws(monkeypatch, image_host) -> Iterator[str]:
    """The stack's Shopify resources in moto; returns the work queue's URL."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    monkeypatch.setattr(shopify_ingest, "EXTRA_IMAGE_HOSTS", (image_host,))
    with mock_aws():
        shopify_webhook.client.cache_clear()
        shopify_webhook._secret_cache.clear()
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (INTAKE, BRANDS):
            s3.create_bucket(Bucket=bucket)
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="shopify-work")["QueueUrl"]
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name=SECRET_ID, SecretString=json.dumps({"current": samples.CLIENT_SECRET})
        )
        for name, value in {
            "SHOPIFY_SECRET_ID": SECRET_ID,
            "SHOPIFY_TABLE_NAME": TABLE,
            "SHOPIFY_QUEUE_URL": queue_url,
            "SHOPIFY_BRAND": "acme",
            "INTAKE_BUCKET": INTAKE,
            "BRANDS_URI": f"s3://{BRANDS}/brands/",
        }.items():
            monkeypatch.setenv(name, value)
        settings.load.cache_clear()
        yield queue_url
        shopify_webhook.client.cache_clear()
        settings.load.cache_clear()


def api_event(body: bytes, headers: dict[str, str]) -> dict:
    """API Gateway's REST proxy event with binary media type */*: the raw body, base64."""
    return {
        "resource": "/webhooks/shopify",
        "path": "/webhooks/shopify",
        "httpMethod": "POST",
        "headers": headers,
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


def drain(queue_url: str) -> list[str]:
    sqs = boto3.client("sqs", region_name=REGION)
    bodies = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def intake_keys() -> list[str]:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=INTAKE).get("Contents") or []
    return sorted(item["Key"] for item in listed)


def cdn_product(image_host: str, **changes) -> dict:
    payload = samples.product(**changes)
    for image in payload["images"]:
        image["src"] = f"http://{image_host}{PHOTO_PATH}?v=1"
    return payload


def test_a_webhook_becomes_photos_under_incoming_once_however_often_it_is_delivered(aws, image_host):
    body = samples.body_of(cdn_product(image_host))
    event = api_event(body, samples.headers(body))

    # When Shopify delivers the product, and retries the delivery
    first = shopify_webhook.lambda_handler(event, FakeContext())
    retried = shopify_webhook.lambda_handler(event, FakeContext())

    # Then both are acknowledged, and one work item is queued
    assert first["statusCode"] == 200 and json.loads(first["body"])["outcome"] == "queued"
    assert retried["statusCode"] == 200 and json.loads(retried["body"])["outcome"] == "duplicate"
    bodies = drain(aws)
    assert len(bodies) == 1

    # When the intake consumer takes the message (and SQS delivers it twice)
    for _ in range(2):
        response = shopify_ingest.lambda_handler(sqs_event(bodies), FakeContext())
        assert response == {"batchItemFailures": []}

    # Then the photo and its product.json are in the intake bucket, once
    keys = intake_keys()
    assert keys[-1] == "incoming/acme/example-t-shirt/product.json"
    (photo,) = keys[:-1]
    assert photo.startswith("incoming/acme/example-t-shirt/01-539438707724640965-") and photo.endswith(".jpg")
    s3 = boto3.client("s3", region_name=REGION)
    assert len(s3.list_object_versions(Bucket=INTAKE, Prefix=photo).get("Versions", [])) == 1
    sidecar = json.loads(s3.get_object(Bucket=INTAKE, Key=keys[-1])["Body"].read())
    assert (sidecar["category"], sidecar["colour"]) == ("tops", "Navy")


def test_a_bad_signature_gets_401_and_queues_nothing(aws):
    body = samples.body_of(samples.PRODUCT)
    headers = samples.headers(body, secret="not the app's secret")

    response = shopify_webhook.lambda_handler(api_event(body, headers), FakeContext())

    assert response["statusCode"] == 401
    assert drain(aws) == []


def test_a_rotated_secret_is_picked_up_at_the_first_refused_signature(aws, monkeypatch):
    # Given a warm function that read the old secret
    body = samples.body_of(samples.PRODUCT)
    warm = samples.headers(body, event_id="before-rotation")
    assert shopify_webhook.lambda_handler(api_event(body, warm), FakeContext())["statusCode"] == 200

    # When the operator rotates (new current, old kept as previous) and Shopify signs with the new secret
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId=SECRET_ID, SecretString=json.dumps({"current": "new-secret", "previous": samples.CLIENT_SECRET})
    )
    monkeypatch.setattr(shopify_webhook, "SECRET_REFRESH_AFTER_SECONDS", 0.0)
    rotated = samples.headers(body, secret="new-secret", event_id="after-rotation")
    old = samples.headers(body, event_id="old-during-overlap")

    # Then both secrets are accepted
    assert shopify_webhook.lambda_handler(api_event(body, rotated), FakeContext())["statusCode"] == 200
    assert shopify_webhook.lambda_handler(api_event(body, old), FakeContext())["statusCode"] == 200


def test_an_event_whose_claim_was_never_confirmed_is_queued_by_shopifys_retry(aws):
    # Given an event claimed ten minutes ago by a function that died before queueing it
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": "event#died-before-queueing"},
            "state": {"S": "claimed"},
            "claimed_at": {"S": "2026-11-30T09:50:00.000000Z"},
            "expires_at": {"N": "4102444800"},
        },
    )
    body = samples.body_of(samples.PRODUCT)
    headers = samples.headers(body, event_id="died-before-queueing")

    # When Shopify retries the delivery, and retries it again
    first = shopify_webhook.lambda_handler(api_event(body, headers), FakeContext())
    second = shopify_webhook.lambda_handler(api_event(body, headers), FakeContext())

    # Then the retry takes the dead claim over and queues the work, once
    assert [json.loads(r["body"])["outcome"] for r in (first, second)] == ["queued", "duplicate"]
    assert len(drain(aws)) == 1


def test_off_cdn_images_and_products_without_images_end_in_clear_terminal_states(aws, image_host):
    # Given a product whose image is not on Shopify's CDN, and one with no images
    off_cdn = samples.product(id=7, handle="off-cdn")
    off_cdn["images"][0]["src"] = "https://images.example.com/front.jpg"
    no_images = samples.product(id=8, handle="bare", images=[])
    bodies = []
    for index, payload in enumerate((off_cdn, no_images)):
        body = samples.body_of(payload)
        shopify_webhook.lambda_handler(api_event(body, samples.headers(body, event_id=f"e{index}")), FakeContext())
        bodies.extend(drain(aws))

    # When intake takes them
    refused, bare = (shopify_ingest.ingest_message(body) for body in bodies)

    # Then the off-CDN image is refused with the host and the field named, the bare product ends as no_images,
    # and nothing is written for either (the batch itself succeeds: no retries of what cannot change)
    assert not isinstance(refused, str) and not isinstance(bare, str)
    (image,) = refused.images
    assert (image.status, image.code) == ("refused", "image_host_not_allowed")
    assert "images.example.com" in (image.message or "") and "images[0].src" in (image.message or "")
    assert bare.outcome == "no_images"
    assert [key for key in intake_keys() if not key.endswith("product.json")] == []


def test_the_same_event_through_eventbridge_is_taken_in_once(aws, image_host):
    # Given Shopify's partner event source delivering the product twice to the queue (no HMAC there)
    event = json.dumps(samples.eventbridge_event(cdn_product(image_host), topic="products/update"))

    # When intake takes both
    response = shopify_ingest.lambda_handler(sqs_event([event, event]), FakeContext())

    # Then one photo is written, the second delivery is a duplicate
    assert response == {"batchItemFailures": []}
    assert len([key for key in intake_keys() if not key.endswith("product.json")]) == 1
    assert shopify_ingest.ingest_message(event) == "duplicate"
