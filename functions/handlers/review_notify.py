"""The `.waitForTaskToken` task: store this image's review with its task token (server-side only). No email here:
the review waits for the scheduled digest (functions/handlers/review_schedule.py), which sends one email per batch
of images, not one per image.

State machine parameters: `{"task_token.$": "$$.Task.Token", "brand": ..., "reviewers": [...], "items": [...]}`:
the checks' `ReviewRequest` plus the token. The token is a `SecretStr` from the moment it is parsed, so no log
line, repr or error message can show it.
"""

from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field, SecretStr

from functions.adapters.aws import review as aws_review
from functions.adapters.aws import settings
from schemas import ReviewRequest

logger = Logger(service="review")
SETTINGS = settings.ReviewSettings


class ReviewTaskRequest(ReviewRequest):
    task_token: SecretStr = Field(min_length=1, max_length=2048)  # Step Functions tokens run up to 2048 characters


@logger.inject_lambda_context(log_event=False)  # the event holds the task token
@event_parser(model=ReviewTaskRequest)
def lambda_handler(event: ReviewTaskRequest, context: LambdaContext) -> dict[str, Any]:
    config = settings.load(SETTINGS)
    task, _ = aws_review.review_service().create(
        event.brand,
        event.reviewers,
        event.items,
        timedelta(seconds=config.review_link_ttl_seconds),
        resume_handle=event.task_token.get_secret_value(),
        awaiting_digest=True,
    )
    logger.info(
        "review stored; awaiting the digest email", extra={"review_id": task.review_id, "items": len(task.items)}
    )
    return {"review_id": task.review_id, "expires_at": task.expires_at.isoformat()}
