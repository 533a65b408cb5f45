"""Scheduled (EventBridge, every 5 minutes): first the digest, which gathers the reviews the notify task stored
(one per image) into batches per brand and reviewer list and sends ONE email per batch; then the sweep, which reminds
once per batch before its link expires, expires reviews past their time (SendTaskFailure `ReviewExpired`), and
retries resuming reviews whose resume failed.
"""

from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws import review as aws_review
from functions.adapters.aws.clients import client
from functions.adapters.aws.ses_mailer import SesMailer
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.review import ReviewSettings
from functions.review.mailer import build_review_email
from functions.review.signing import LinkParams
from functions.review.store import StoredReview
from schemas.review import ReviewItem

logger = Logger(service="review")
SETTINGS = ReviewSettings


def send_email(review: StoredReview, params: LinkParams, reminder: bool = False) -> None:
    """One message for the batch: counts, a few thumbnails, one link. The thumbnails are routes of the review API
    that redirect to a fresh presigned S3 URL when opened (a URL presigned now would die long before the link), each
    signed as an image-only capability for its own preview: fetching them cannot open the page or decide."""
    config = load(SETTINGS)
    service = aws_review.review_service()

    def thumbnail(item: ReviewItem) -> str:
        capability = service.image_capability(params.review_id, item.item_id, "preview", params.expires)
        return aws_review.image_route(config, capability)

    message = build_review_email(
        review.task,
        aws_review.review_link(config, params),
        thumbnail,
        config.review_sender,
        pending=review.pending_items,
        reminder=reminder,
    )
    message_id = SesMailer(client("ses")).send(message)
    logger.info(
        "review email sent",
        extra={
            "review_id": review.review_id,
            "items": len(review.pending_items),
            "reminder": reminder,
            "ses_message_id": message_id,
        },
    )


def send_reminder(review: StoredReview, params: LinkParams) -> None:
    send_email(review, params, reminder=True)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = load(SETTINGS)
    service = aws_review.review_service()
    # Both stop early, leaving the rest to the next run, rather than running into the function's timeout.
    time_left_ms = context.get_remaining_time_in_millis
    emailed = service.digest(send_email, time_left_ms=time_left_ms)
    report = service.sweep(
        timedelta(seconds=config.review_remind_before_seconds), send_reminder, time_left_ms=time_left_ms
    )
    result = {"emailed": emailed, "reminded": report.reminded, "expired": report.expired, "resumed": report.resumed}
    logger.info("review sweep done", extra=result)
    return result
