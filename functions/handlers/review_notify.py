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
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field, SecretStr, ValidationError

from functions.adapters.aws import review as aws_review
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.review import ReviewSettings
from functions.adapters.aws.transient import retry_transient
from schemas import ReviewRequest

logger = Logger(service="review")
SETTINGS = ReviewSettings


class ReviewTaskRequest(ReviewRequest):
    task_token: SecretStr = Field(min_length=1, max_length=2048)  # Step Functions tokens run up to 2048 characters


class InvalidReviewTaskError(ValueError):
    """The task's input does not fit `ReviewTaskRequest`. Its message names fields and error types only."""


def parse_task(event: Any) -> ReviewTaskRequest:
    """Parse the task input. Not Powertools' `event_parser`: its pydantic error quotes the input (`input_value=`), and
    the input holds the task token, so an invalid event (or a token over 2048 characters) would put the token in the
    error, the Lambda's error report and the execution history."""
    try:
        return ReviewTaskRequest.model_validate(event)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part)[:64] for part in problem['loc']) or '(the event)'}: {problem['type']}"
            for problem in error.errors(include_url=False, include_context=False, include_input=False)
        ]
    # Raised outside the `except`: no chained ValidationError (which would carry the input) goes with it.
    raise InvalidReviewTaskError(f"invalid review task input ({len(problems)} error(s)): {'; '.join(problems[:20])}")


@logger.inject_lambda_context(log_event=False)  # the event holds the task token
@retry_transient
def lambda_handler(raw_event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = parse_task(raw_event)
    config = load(SETTINGS)
    task, _ = aws_review.keyless_review_service().create(
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
