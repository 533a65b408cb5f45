"""Partial batch responses for SQS (functions/adapters/aws/sqs_batch.py): what the event source mapping reads to
delete the messages that were handled and redeliver the ones that failed."""

import logging

import pytest

from functions.adapters.aws.sqs_batch import EntireBatchFailedError, partial_batch_response


def _batch(*bodies: str) -> dict:
    return {
        "Records": [{"messageId": f"m{n}", "body": body, "eventSource": "aws:sqs"} for n, body in enumerate(bodies)]
    }


def _handle(body: str) -> str:
    if body.startswith("bad"):
        raise ValueError(f"cannot take {body} (token=s3cr3t)")
    return body


def test_only_the_messages_that_failed_are_reported_and_the_rest_of_the_batch_goes_on(caplog):
    # Given a batch whose second and fourth messages cannot be handled
    handled: list[str] = []

    def handle(body: str) -> None:
        handled.append(_handle(body))

    # When it is processed
    with caplog.at_level(logging.WARNING):
        response = partial_batch_response(_batch("a", "bad-1", "b", "bad-2"), handle)

    # Then those two are named for redelivery, the others were all handled, in order
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}
    assert handled == ["a", "b"]
    # And each failure is logged by message id and error type, never with what the error quoted
    failures = [record for record in caplog.records if record.getMessage() == "message failed"]
    assert [(r.message_id, r.error) for r in failures] == [("m1", "ValueError"), ("m3", "ValueError")]
    assert "s3cr3t" not in caplog.text


def test_a_batch_that_fails_whole_raises_and_an_empty_one_reports_nothing():
    # Given a batch whose every message fails, When it is processed, Then the invocation fails (SQS redelivers all)
    with pytest.raises(EntireBatchFailedError, match="all 2 messages"):
        partial_batch_response(_batch("bad-1", "bad-2"), _handle)
    # And a batch without records has nothing to report
    assert partial_batch_response({"Records": []}, _handle) == {"batchItemFailures": []}
