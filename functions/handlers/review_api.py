"""The review page and decision API behind API Gateway (REST): four routes, matched by `route` below.

GET /review/{id}                      the page (reads only)
POST /review/{id}                     decisions (form or JSON), CSRF-checked, applied at most once
GET /review/{id}/image/{item}/{kind}  a route that redirects to a fresh presigned URL (email thumbnails, signed as
                                      image-only capabilities that the page and the POST refuse)
GET /review-static/{name}             review.js / review.css
"""

import base64
import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import review as aws_review
from functions.adapters.aws.clients import client
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.review import ReviewSettings
from functions.review.page import security_headers
from functions.review.signing import LinkRefusedError
from functions.review.web import ReviewWeb, WebResponse

logger = Logger(service="review")
SETTINGS = ReviewSettings

# The four routes are matched here rather than with Powertools' event handler: importing it loads every resolver it
# has (AppSync's asyncio, ALB, VPC Lattice, Bedrock, their event classes and OpenAPI models), ~0.35x the floor of
# this function's cold start for what the local review server does in a few lines (functions/adapters/local).
Route = Callable[[dict[str, Any], list[str]], WebResponse]


def _web() -> ReviewWeb:
    config = load(SETTINGS)
    images = aws_review.presigned_image_urls(client("s3"), config.review_image_url_seconds)
    return ReviewWeb(aws_review.review_service(), images, aws_review.base_path(config))


def _query(event: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in (event.get("queryStringParameters") or {}).items()}


def _body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()


def _sso_identity(event: dict[str, Any]) -> str | None:
    """The authorizer's claims, when API Gateway passes them (Cognito or a Lambda authorizer)."""
    authorizer: dict[str, Any] = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or authorizer
    email = claims.get("email") or claims.get("principalId") or authorizer.get("principalId")
    return f"sso:{email}" if email else None


def get_page(event: dict[str, Any], parts: list[str]) -> WebResponse:
    return _web().page(parts[1], _query(event))


def post_decisions(event: dict[str, Any], parts: list[str]) -> WebResponse:
    content_type = next((v for k, v in (event.get("headers") or {}).items() if k.lower() == "content-type"), "")
    return _web().decide(parts[1], content_type, _body(event), _sso_identity(event))


def get_image(event: dict[str, Any], parts: list[str]) -> WebResponse:
    review_id, item_id, kind = parts[1], parts[3], parts[4]
    web = _web()
    if kind not in aws_review.IMAGE_KINDS:
        return web.not_found()
    try:
        # The thumbnail's image-only capability for exactly this image, or the review link itself.
        _, item = web.service.open_image(review_id, item_id, kind, _query(event))
    except LinkRefusedError as error:
        return web.refused(reason=error.reason)
    if item is None:
        return web.not_found()
    config = load(SETTINGS)
    bucket, key = aws_review.image_location(item, kind)
    url = client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=config.review_image_url_seconds
    )
    headers = {k: v for k, v in security_headers().items() if k != "Content-Type"} | {"Location": url}
    return WebResponse(302, b"", {"Content-Type": "text/plain"} | headers)


def get_static(event: dict[str, Any], parts: list[str]) -> WebResponse:
    return _web().static(parts[1])


def route(method: str, parts: list[str]) -> Route | None:
    """GET/POST /review/{id}, GET /review/{id}/image/{item}/{kind}, GET /review-static/{name}; None for the rest."""
    if not all(parts):  # an empty segment (`/review//image/...`) names nothing
        return None
    if len(parts) == 2 and parts[0] == "review":
        return {"GET": get_page, "POST": post_decisions}.get(method)
    if len(parts) == 5 and parts[0] == "review" and parts[2] == "image" and method == "GET":
        return get_image
    if len(parts) == 2 and parts[0] == "review-static" and method == "GET":
        return get_static
    return None


def _not_found() -> WebResponse:
    return WebResponse(
        404, json.dumps({"message": "Not found"}).encode(), security_headers(content_type="application/json")
    )


def _proxy_response(response: WebResponse) -> dict[str, Any]:
    """API Gateway's proxy answer: the review responses are text (HTML, JSON, CSS, JS) or empty redirects."""
    headers = {"Content-Type": "text/html; charset=utf-8"} | response.headers
    return {"statusCode": response.status, "headers": headers, "body": response.body.decode(), "isBase64Encoded": False}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # log_event stays False: the query string holds the link signature.
    load(SETTINGS)  # a missing variable fails here, naming it, before any request is served
    parts = str(event.get("path") or "").strip("/").split("/")  # as Powertools matched them: not unquoted
    handler = route(str(event.get("httpMethod") or "").upper(), parts)
    return _proxy_response(handler(event, parts) if handler else _not_found())
