"""Continuing the Step Functions execution that waits for a review: `.waitForTaskToken` resumed with the decisions,
or failed with `ReviewExpired`. The token is the resume handle; it is never logged.
"""

import logging
from typing import Any

from functions.review.service import ResumeStatus

logger = logging.getLogger(__name__)

# The execution is gone, finished or the token is stale: the batch is closed for the workflow, not a server error.
ALREADY_CLOSED_ERRORS = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
EXPIRED_ERROR = "ReviewExpired"
_MAX_CAUSE = 32_768  # SendTaskFailure's limit


class StepFunctionsResumer:
    """`SendTaskSuccess` with the decisions JSON, `SendTaskFailure(ReviewExpired)` on expiry."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _call(self, review_id: str, method: str, **kwargs: Any) -> ResumeStatus:
        try:
            getattr(self.client, method)(**kwargs)
        except self.client.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ALREADY_CLOSED_ERRORS:
                # Log the code only: the error message may echo the token.
                logger.warning("workflow already closed", extra={"review_id": review_id, "error_code": code})
                return ResumeStatus.ALREADY_CLOSED
            raise
        return ResumeStatus.RESUMED

    def resume(self, review_id: str, handle: str | None, outcome: str) -> ResumeStatus:
        if handle is None:  # a re-issued batch has no waiting execution; publishing reads the store instead
            return ResumeStatus.ALREADY_CLOSED
        return self._call(review_id, "send_task_success", taskToken=handle, output=outcome)

    def fail_expired(self, review_id: str, handle: str | None, cause: str) -> ResumeStatus:
        if handle is None:
            return ResumeStatus.ALREADY_CLOSED
        return self._call(
            review_id, "send_task_failure", taskToken=handle, error=EXPIRED_ERROR, cause=cause[:_MAX_CAUSE]
        )
