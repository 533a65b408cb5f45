"""The work queue every SQS-fed consumer here uses: encrypted, TLS only, with a dead-letter queue beside it."""

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

MAX_RECEIVE_COUNT = 5


def work_queue(scope: Construct, queue_id: str, consumer_timeout: Duration) -> tuple[sqs.Queue, sqs.Queue]:
    """(queue, dead letters) in `scope`; a message goes to the dead letters after MAX_RECEIVE_COUNT receives."""
    dead_letters = sqs.Queue(
        scope,
        "DeadLetters",
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )
    queue = sqs.Queue(
        scope,
        queue_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        # 6x the consumer's timeout: a message is not redelivered while a slow batch is still being worked on.
        visibility_timeout=Duration.seconds(consumer_timeout.to_seconds() * 6),
        retention_period=Duration.days(4),
        dead_letter_queue=sqs.DeadLetterQueue(queue=dead_letters, max_receive_count=MAX_RECEIVE_COUNT),
    )
    return queue, dead_letters
