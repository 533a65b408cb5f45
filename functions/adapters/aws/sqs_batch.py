"""SQS batches with partial failures (the event source mapping's `ReportBatchItemFailures`): each message is handled
on its own; the ones that raised are named in `batchItemFailures`, so SQS redelivers only those (and after the
queue's maxReceiveCount they land in the DLQ) while the rest of the batch is done.

Not Powertools' batch utility, which does the same for SQS: its package also loads its async processor (asyncio),
every event data class and, with pydantic loaded, its parser models, ~0.2x the cold-start floor of ingest and
shopify_ingest. As there, a batch whose every message failed raises, so the invocation shows as an error.
"""

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class EntireBatchFailedError(RuntimeError):
    """Every message of the batch failed: SQS redelivers them all, and Lambda counts the invocation as an error."""


def partial_batch_response(event: dict[str, Any], handle_body: Callable[[str], object]) -> dict[str, Any]:
    """Run `handle_body` on each message's body; `{"batchItemFailures": [{"itemIdentifier": id}, ...]}` for those
    that raised. Logs each failure by message id and error type (a message's text may quote what it was sent)."""
    records = event.get("Records") or []
    failed = []
    for record in records:
        try:
            handle_body(record["body"])
        except Exception as error:  # this message is redelivered; the others go on
            logger.warning("message failed", extra={"message_id": record["messageId"], "error": type(error).__name__})
            failed.append({"itemIdentifier": record["messageId"]})
    if records and len(failed) == len(records):
        raise EntireBatchFailedError(f"all {len(records)} messages of the batch failed")
    return {"batchItemFailures": failed}
