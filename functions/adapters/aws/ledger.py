"""The intake ledger: one DynamoDB item per object version, written with a conditional put.

`claim` succeeds once per object version. A claim that never got as far as `started` (the Lambda died between the
two writes) may be claimed again; the deterministic execution name then stops a second execution.
"""

from datetime import UTC, datetime
from typing import Any

CLAIMED = "claimed"
STARTED = "started"


class IntakeLedger:
    """Table with partition key `object_version` (string)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table = table_name

    def claim(self, object_version: str, execution_name: str) -> bool:
        """True when this caller should start the execution; False when one was already started."""
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "object_version": {"S": object_version},
                    "execution_name": {"S": execution_name},
                    "state": {"S": CLAIMED},
                    "claimed_at": {"S": datetime.now(UTC).isoformat()},
                },
                ConditionExpression="attribute_not_exists(object_version)",
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            pass
        row = self.client.get_item(
            TableName=self.table, Key={"object_version": {"S": object_version}}, ConsistentRead=True
        ).get("Item", {})
        return row.get("state", {}).get("S") != STARTED

    def mark_started(self, object_version: str, execution_arn: str) -> None:
        self.client.update_item(
            TableName=self.table,
            Key={"object_version": {"S": object_version}},
            UpdateExpression="SET #state = :started, execution_arn = :arn, started_at = :now",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":started": {"S": STARTED},
                ":arn": {"S": execution_arn},
                ":now": {"S": datetime.now(UTC).isoformat()},
            },
        )
