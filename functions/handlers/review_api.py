"""The review page and decision API behind API Gateway (REST), with Powertools' event handler.

GET /review/{id}                      the page (reads only)
POST /review/{id}                     decisions (form or JSON), CSRF-checked, applied at most once
GET /review/{id}/image/{item}/{kind}  a route that redirects to a fresh presigned URL (email thumbnails, signed as
                                      image-only capabilities that the page and the POST refuse)
GET /review-static/{name}             review.js / review.css
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import review as aws_review
from functions.adapters.aws import settings
from functions.adapters.aws.clients import client
from functions.review.page import security_headers
from functions.review.signing import LinkRefusedError
from functions.review.web import ReviewWeb, WebResponse

logger = Logger(service="review")
SETTINGS = settings.ReviewSettings
app = APIGatewayRestResolver()


def _web() -> ReviewWeb:
    config = settings.load(SETTINGS)
    images = aws_review.presigned_image_urls(client("s3"), config.review_image_url_seconds)
    return ReviewWeb(aws_review.review_service(), images, aws_review.base_path(config))


def _respond(response: WebResponse) -> Response[str]:
    content_type = response.headers.get("Content-Type", "text/html; charset=utf-8")
    headers = {k: v for k, v in response.headers.items() if k != "Content-Type"}
    return Response(response.status, content_type, response.body.decode(), headers)


def _query() -> dict[str, str]:
    return {key: str(value) for key, value in (app.current_event.query_string_parameters or {}).items()}


def _sso_identity() -> str | None:
    """The authorizer's claims, when API Gateway passes them (Cognito or a Lambda authorizer)."""
    authorizer: dict[str, Any] = (app.current_event.raw_event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or authorizer
    email = claims.get("email") or claims.get("principalId") or authorizer.get("principalId")
    return f"sso:{email}" if email else None


@app.get("/review/<review_id>")
def get_page(review_id: str) -> Response[str]:
    return _respond(_web().page(review_id, _query()))


@app.post("/review/<review_id>")
def post_decisions(review_id: str) -> Response[str]:
    event = app.current_event
    content_type = next((v for k, v in (event.headers or {}).items() if k.lower() == "content-type"), "")
    body = event.decoded_body or ""
    return _respond(_web().decide(review_id, content_type, body.encode(), _sso_identity()))


@app.get("/review/<review_id>/image/<item_id>/<kind>")
def get_image(review_id: str, item_id: str, kind: str) -> Response[str]:
    web = _web()
    if kind not in aws_review.IMAGE_KINDS:
        return _respond(web.not_found())
    try:
        # The thumbnail's image-only capability for exactly this image, or the review link itself.
        _, item = web.service.open_image(review_id, item_id, kind, _query())
    except LinkRefusedError as error:
        return _respond(web.refused(reason=error.reason))
    if item is None:
        return _respond(web.not_found())
    config = settings.load(SETTINGS)
    bucket, key = aws_review.image_location(item, kind)
    url = client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=config.review_image_url_seconds
    )
    headers = {k: v for k, v in security_headers().items() if k != "Content-Type"} | {"Location": url}
    return Response(302, "text/plain", "", headers)


@app.get("/review-static/<name>")
def get_static(name: str) -> Response[str]:
    return _respond(_web().static(name))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # log_event stays False: the query string holds the link signature.
    settings.load(SETTINGS)  # a missing variable fails here, naming it, before any request is served
    return app.resolve(event, context)
