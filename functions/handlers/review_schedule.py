"""Scheduled (EventBridge, e.g. every 15 minutes): remind once before a link expires, expire batches past their
time (SendTaskFailure `ReviewExpired`), and retry resuming batches whose resume failed.
"""

from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.handlers import review_common
from functions.review.mailer import SesMailer, build_review_email
from functions.review.signing import LinkParams
from functions.review.store import StoredReview

logger = Logger(service="review")


def send_reminder(review: StoredReview, params: LinkParams) -> None:
    config = review_common.settings()
    message = build_review_email(
        review.task,
        config.link(params),
        lambda item: config.image_route(params, item, "preview"),
        config.sender,
        pending=review.pending_items,
        reminder=True,
    )
    SesMailer(review_common.client("ses")).send(message)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = review_common.settings()
    report = review_common.review_service().sweep(timedelta(seconds=config.remind_before_seconds), send_reminder)
    result = {"reminded": report.reminded, "expired": report.expired, "resumed": report.resumed}
    logger.info("review sweep done", extra=result)
    return result
