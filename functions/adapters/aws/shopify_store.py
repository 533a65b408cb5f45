"""The Shopify intake store on DynamoDB: one table, partition key `pk`, every write conditional where it decides.

Items: `event#<id>` (the claim, `claimed` then `confirmed` once queued; expires after `EVENT_DAYS` through the
table's TTL on `expires_at`),
`product#<shop>#<id>` (the latest event time processed), `src#...`/`image#...` (image versions already taken).
"""

from datetime import UTC, datetime, timedelta
from typing import Any

EVENT_DAYS = 7  # Shopify retries for 4 hours; a week of event ids is plenty
CLAIMED, CONFIRMED = "claimed", "confirmed"
TTL_ATTRIBUTE = "expires_at"  # the table's TTL (cdk/catalog_infra/shopify.py)
# A claim not confirmed within this long belongs to a process that died between the claim and the queue (the webhook
# function times out after 10 s): a later delivery of the event may claim it again.
DEAD_CLAIM_SECONDS = 60


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DynamoDBShopifyStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table = table_name

    def claim_event(self, event_id: str) -> bool:
        now = datetime.now(UTC)
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": f"event#{event_id}"},
                    "state": {"S": CLAIMED},
                    "claimed_at": {"S": _utc_text(now)},
                    TTL_ATTRIBUTE: {"N": str(int((now + timedelta(days=EVENT_DAYS)).timestamp()))},
                },
                # New, or claimed by a process that died before queueing (never confirmed, and long ago).
                ConditionExpression="attribute_not_exists(pk) OR (#state = :claimed AND claimed_at < :dead_before)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":claimed": {"S": CLAIMED},
                    ":dead_before": {"S": _utc_text(now - timedelta(seconds=DEAD_CLAIM_SECONDS))},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def confirm_event(self, event_id: str) -> None:
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": f"event#{event_id}"}},
            UpdateExpression="SET #state = :confirmed",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":confirmed": {"S": CONFIRMED}},
        )

    def release_event(self, event_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key={"pk": {"S": f"event#{event_id}"}})

    def advance_product(self, product_key: str, triggered_at: datetime) -> bool:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"product#{product_key}"}},
                UpdateExpression="SET triggered_at = :at",
                # Equal passes: a retry of the same event must not look stale to itself.
                ConditionExpression="attribute_not_exists(pk) OR triggered_at <= :at",
                ExpressionAttributeValues={":at": {"S": _utc_text(triggered_at)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def seen(self, key: str) -> bool:
        found = self.client.get_item(TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True)
        return "Item" in found

    def mark(self, key: str) -> None:
        self.client.put_item(TableName=self.table, Item={"pk": {"S": key}, "at": {"S": _utc_text(datetime.now(UTC))}})
