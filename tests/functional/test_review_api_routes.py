"""The review API's routing (functions/handlers/review_api.py matches its four routes itself): a request API
Gateway's `{proxy+}` resources pass on that is none of them gets a 404 and reads nothing; the static files are served
with their types. The page, decisions and image redirects are exercised in test_review_handlers.py.
"""

import json

import boto3
import pytest
from moto import mock_aws

from functions.adapters.aws import review as aws_review
from functions.handlers import review_api
from functions.review.signing import SigningKeys

from .aws_fixtures import REGION, FakeContext

KEYS_SECRET = "catalog/review-keys"


@pytest.fixture
def environment(monkeypatch):
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "REVIEW_TABLE_NAME": "catalog-reviews",
        "REVIEW_KEYS_SECRET_ID": KEYS_SECRET,
        "REVIEW_SENDER": "review@brand.example.com",
        "REVIEW_BASE_URL": "https://api.example.com/prod",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        aws_review.reset()
        yield
        aws_review.reset()


def _request(method: str, path: str) -> dict:
    event = {
        "resource": "/review/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {},
        "queryStringParameters": None,
        "requestContext": {"stage": "prod", "requestId": "r-1", "httpMethod": method, "path": f"/prod{path}"},
        "body": None,
        "isBase64Encoded": False,
    }
    return review_api.lambda_handler(event, FakeContext())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/review/r-123/extra"),
        ("GET", "/review/r-123/image/i1"),
        ("PUT", "/review/r-123"),
        ("POST", "/review/r-123/image/i1/preview"),
        ("DELETE", "/review-static/review.js"),
        ("GET", "/review"),
        ("GET", "/review//image/i1/preview"),
    ],
)
def test_a_request_for_no_route_is_a_404_that_reads_nothing(environment, method, path):
    # Given an account where the signing keys' secret does not exist, so any attempt to serve a review would fail
    # When a request that matches none of the four routes arrives
    response = _request(method, path)

    # Then it is answered 404 in JSON, with the review responses' security headers, without touching the service
    assert response["statusCode"] == 404
    assert json.loads(response["body"]) == {"message": "Not found"}
    assert response["headers"]["Content-Type"] == "application/json"
    assert "default-src 'none'" in response["headers"]["Content-Security-Policy"]


def test_static_files_are_served_with_their_types_and_an_unknown_one_is_not_found(environment):
    # Given the signing keys' secret, as the stack creates it
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=KEYS_SECRET, SecretString=SigningKeys.generate("k1").to_json()
    )

    # When the page's script, its style sheet and a file that is not one of them are requested
    script = _request("GET", "/review-static/review.js")
    style = _request("GET", "/review-static/review.css")
    other = _request("GET", "/review-static/secrets.txt")

    # Then the two files come back as text with their own types, and the other one is the page's 404
    assert (script["statusCode"], script["headers"]["Content-Type"]) == (200, "text/javascript; charset=utf-8")
    assert (style["statusCode"], style["headers"]["Content-Type"]) == (200, "text/css; charset=utf-8")
    assert script["body"] and style["body"] and script["isBase64Encoded"] is False
    assert other["statusCode"] == 404 and "There is nothing here." in other["body"]
