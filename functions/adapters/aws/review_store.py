"""The review store on one DynamoDB table: the AWS runtime's adapter.

On AWS the store also keeps digest batches (`BatchStore`): a batch row (sk `batch`) lists its member reviews, and is
written in one transaction with each member's claim (`awaiting_digest` -> `batch_id`), so a review joins at most one
batch. Decisions stay on the member reviews. The scheduled sweep and digest read bounded pages, never the whole
table: a review or batch row carries `sweep_queue` (and `sweep_at`) only while it has scheduled work left, so the
sparse index `sweep` holds just those rows, per queue in `sweep_at` order.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.review.store import (
    MAX_BATCH_MEMBERS,
    AlreadyDecided,
    DecideResult,
    DecisionApplied,
    ReviewClosed,
    StoredBatch,
    StoredReview,
    UnknownReviewError,
    epoch_seconds,
    parse_time,
)
from schemas.review import ReviewDecision, ReviewState, ReviewTask

# -- DynamoDB (AWS) -------------------------------------------------------------------------------------------------

_REVIEW_SK = "review"
_ITEM_PREFIX = "item#"
_BATCH_SK = "batch"
_AWAITING_DIGEST = "awaiting_digest"  # present only until a batch claims the review (a sparse marker)

# The sparse index of scheduled work (cdk/catalog_infra/review.py declares the same names): a row is in it only while
# it carries `sweep_queue`; within a queue, `sweep_at` (epoch seconds) orders it and says when it is due.
SWEEP_INDEX = "sweep"
SWEEP_QUEUE = "sweep_queue"
SWEEP_AT = "sweep_at"
QUEUE_REMIND = "review#remind"  # pending, may get its own reminder (sweep_at = expires_at, read remind_before early)
QUEUE_EXPIRE = "review#expire"  # pending, reminded or in a batch: only its expiry is due (sweep_at = expires_at)
QUEUE_DIGEST = "review#digest"  # pending and awaiting a digest batch (sweep_at = expires_at)
QUEUE_TELL = "review#tell"  # decided or expired; the workflow is not told yet (sweep_at = when to try, 0 = now)
QUEUE_BATCH_EMAIL = "batch#email"  # a batch whose email is not sent (sweep_at = expires_at)
QUEUE_BATCH_REMIND = "batch#remind"  # an emailed batch, not reminded yet (sweep_at = expires_at)
_PAGE = 100  # rows per index query


class DynamoDBReviewStore:
    """One table, partition key `pk` (the review id), sort key `sk` (`review`, or `item#<item id>`).

    The table is encrypted at rest with a customer-managed KMS key by the CDK stack, because the `resume_handle`
    attribute holds the task token: whoever has it can resume or fail the execution.

    Scheduled work is found through the sparse index `sweep` (partition `sweep_queue`, sort `sweep_at`, keys only),
    never by a scan. Each conditional write that changes what a row waits for moves it between queues, and the write
    that finishes its work removes it from the index:
    created -> review#digest (or review#remind) -> claimed by a batch, or reminded -> review#expire;
    decided or expired -> review#tell -> workflow told (`mark_resumed`) -> out.
    Batches: created -> batch#email -> emailed -> batch#remind -> reminded, or nothing left to ask -> out.
    """

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table = table_name

    def create(self, task: ReviewTask, identity: str, resume_handle: str | None, awaiting_digest: bool = False) -> None:
        review: dict[str, Any] = {
            "pk": {"S": task.review_id},
            "sk": {"S": _REVIEW_SK},
            "task": {"S": task.model_dump_json()},
            "identity": {"S": identity},
            "state": {"S": ReviewState.PENDING.value},
            "expires_at": {"N": str(int(epoch_seconds(task.expires_at)))},
        }
        if resume_handle is not None:
            review["resume_handle"] = {"S": resume_handle}
        if awaiting_digest:
            review[_AWAITING_DIGEST] = {"BOOL": True}
        review[SWEEP_QUEUE] = {"S": QUEUE_DIGEST if awaiting_digest else QUEUE_REMIND}
        review[SWEEP_AT] = review["expires_at"]
        puts = [{"Put": {"TableName": self.table, "Item": review, "ConditionExpression": "attribute_not_exists(pk)"}}]
        puts += [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": task.review_id},
                        "sk": {"S": _ITEM_PREFIX + item.item_id},
                        "state": {"S": ReviewState.PENDING.value},
                    },
                }
            }
            for item in task.items
        ]
        # A transaction holds at most 100 writes; bigger batches are written review-first, then items in chunks.
        for start in range(0, len(puts), 100):
            self.client.transact_write_items(TransactItems=puts[start : start + 100])

    def _query(self, review_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": review_id}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            rows.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, review_id: str) -> StoredReview | None:
        rows = self._query(review_id)
        head = next((row for row in rows if row["sk"]["S"] == _REVIEW_SK), None)
        if head is None:
            return None
        decisions = {}
        for row in rows:
            if row["sk"]["S"].startswith(_ITEM_PREFIX) and "decision" in row:
                decision = ReviewDecision.model_validate_json(row["decision"]["S"])
                decisions[decision.item_id] = decision
        return StoredReview(
            task=ReviewTask.model_validate_json(head["task"]["S"]),
            identity=head["identity"]["S"],
            state=ReviewState(head["state"]["S"]),
            decisions=decisions,
            reminder_sent_at=parse_time(head.get("reminder_sent_at", {}).get("S")),
            resumed_at=parse_time(head.get("resumed_at", {}).get("S")),
            awaiting_digest=_AWAITING_DIGEST in head,
            batch_id=head.get("batch_id", {}).get("S"),
        )

    def resume_handle(self, review_id: str) -> str | None:
        row = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": review_id}, "sk": {"S": _REVIEW_SK}},
            ProjectionExpression="resume_handle",
            ConsistentRead=True,
        ).get("Item")
        return row["resume_handle"]["S"] if row and "resume_handle" in row else None

    def decide(self, review_id: str, decision: ReviewDecision, now: datetime) -> DecideResult:
        item_key = {"pk": {"S": review_id}, "sk": {"S": _ITEM_PREFIX + decision.item_id}}
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": {"pk": {"S": review_id}, "sk": {"S": _REVIEW_SK}},
                            "ConditionExpression": "#state = :pending AND expires_at > :now",
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": {
                                ":pending": {"S": ReviewState.PENDING.value},
                                ":now": {"N": str(int(epoch_seconds(now)))},
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": item_key,
                            "UpdateExpression": "SET #state = :decided, decision = :decision",
                            "ConditionExpression": "#state = :pending",
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": {
                                ":pending": {"S": ReviewState.PENDING.value},
                                ":decided": {"S": ReviewState.DECIDED.value},
                                ":decision": {"S": decision.model_dump_json()},
                            },
                        }
                    },
                ]
            )
            return DecisionApplied(decision)
        except self.client.exceptions.TransactionCanceledException:
            pass
        row = self.client.get_item(TableName=self.table, Key=item_key, ConsistentRead=True).get("Item")
        head = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": review_id}, "sk": {"S": _REVIEW_SK}}, ConsistentRead=True
        ).get("Item")
        if row is None or head is None:
            raise UnknownReviewError(f"no item {decision.item_id!r} in review {review_id!r}")
        if "decision" in row:
            return AlreadyDecided(ReviewDecision.model_validate_json(row["decision"]["S"]))
        state = ReviewState(head["state"]["S"])
        return ReviewClosed(ReviewState.EXPIRED if state is ReviewState.PENDING else state)

    def _conditional_update(
        self, review_id: str, update: str, condition: str, values: dict[str, Any] | None, sk: str = _REVIEW_SK
    ) -> bool:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": review_id}, "sk": {"S": sk}},
            "UpdateExpression": update,
            "ConditionExpression": condition,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if "#state" in update + condition:
            kwargs["ExpressionAttributeNames"] = {"#state": "state"}
        try:
            self.client.update_item(**kwargs)
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False

    def close_if_decided(self, review_id: str) -> bool:
        rows = self._query(review_id)
        if any(r["sk"]["S"].startswith(_ITEM_PREFIX) and r["state"]["S"] != ReviewState.DECIDED.value for r in rows):
            return False
        # Decisions are final, so "all decided" read after our own write stays true; the conditional write on the
        # batch makes exactly one of several concurrent last deciders the one that resumes the workflow.
        return self._conditional_update(
            review_id,
            f"SET #state = :decided, {SWEEP_QUEUE} = :tell, {SWEEP_AT} = :due",
            "#state = :pending",
            {
                ":pending": {"S": ReviewState.PENDING.value},
                ":decided": {"S": ReviewState.DECIDED.value},
                ":tell": {"S": QUEUE_TELL},
                ":due": {"N": "0"},
            },
        )

    def expire(self, review_id: str) -> bool:
        return self._conditional_update(
            review_id,
            f"SET #state = :expired, {SWEEP_QUEUE} = :tell, {SWEEP_AT} = :due",
            "#state = :pending",
            {
                ":pending": {"S": ReviewState.PENDING.value},
                ":expired": {"S": ReviewState.EXPIRED.value},
                ":tell": {"S": QUEUE_TELL},
                ":due": {"N": "0"},
            },
        )

    def mark_reminded(self, review_id: str, now: datetime) -> bool:
        if not self._conditional_update(
            review_id,
            "SET reminder_sent_at = :now",
            "attribute_exists(pk) AND attribute_not_exists(reminder_sent_at)",
            {":now": {"S": now.isoformat()}},
        ):
            return False
        # Only its expiry is left for the sweep (unless the review moved on meanwhile: then its queue is right).
        self._conditional_update(
            review_id,
            f"SET {SWEEP_QUEUE} = :expire",
            f"{SWEEP_QUEUE} = :remind",
            {":remind": {"S": QUEUE_REMIND}, ":expire": {"S": QUEUE_EXPIRE}},
        )
        return True

    def mark_resumed(self, review_id: str, now: datetime) -> None:
        self._conditional_update(
            review_id,
            f"SET resumed_at = :now REMOVE {SWEEP_QUEUE}, {SWEEP_AT}",
            "attribute_exists(pk)",
            {":now": {"S": now.isoformat()}},
        )

    def retry_later(self, review_id: str, at: datetime) -> None:
        self._conditional_update(
            review_id,
            f"SET {SWEEP_AT} = :at",
            f"{SWEEP_QUEUE} = :tell",
            {":at": {"N": str(int(epoch_seconds(at)))}, ":tell": {"S": QUEUE_TELL}},
        )

    def _due(self, queue: str, limit: int, up_to: int | None = None, after: int | None = None) -> Iterator[str]:
        """The `pk` of at most `limit` rows of one queue, in `sweep_at` order, with `after < sweep_at <= up_to`."""
        condition = f"{SWEEP_QUEUE} = :queue"
        values: dict[str, Any] = {":queue": {"S": queue}}
        if up_to is not None and after is not None:
            condition += f" AND {SWEEP_AT} BETWEEN :after AND :up_to"
            values[":after"], values[":up_to"] = {"N": str(after + 1)}, {"N": str(up_to)}
        elif up_to is not None:
            condition += f" AND {SWEEP_AT} <= :up_to"
            values[":up_to"] = {"N": str(up_to)}
        elif after is not None:
            condition += f" AND {SWEEP_AT} > :after"
            values[":after"] = {"N": str(after)}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        left = limit
        while left > 0:
            page = self.client.query(Limit=min(_PAGE, left), **kwargs)
            rows = page.get("Items", [])
            left -= len(rows)
            yield from (row["pk"]["S"] for row in rows)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def open_reviews(self, now: datetime, remind_before: timedelta, limit: int) -> list[StoredReview]:
        now_s, horizon = int(epoch_seconds(now)), int(epoch_seconds(now + remind_before))
        ids: list[str] = []
        for queue, up_to in (
            (QUEUE_TELL, now_s),
            (QUEUE_EXPIRE, now_s),
            (QUEUE_DIGEST, now_s),
            (QUEUE_REMIND, horizon),
        ):
            ids.extend(self._due(queue, limit - len(ids), up_to=up_to))
        # The index lags the table: read each review consistently, and drop one whose workflow was told meanwhile.
        reviews = [review for review in (self.get(review_id) for review_id in ids) if review is not None]
        return [r for r in reviews if r.state is ReviewState.PENDING or r.resumed_at is None]

    # -- digest batches --------------------------------------------------------------------------------------------

    def awaiting_digest(self, now: datetime, limit: int) -> list[ReviewTask]:
        tasks = []
        for review_id in self._due(QUEUE_DIGEST, limit, after=int(epoch_seconds(now))):
            head = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": review_id}, "sk": {"S": _REVIEW_SK}},
                ProjectionExpression=f"task, #state, {_AWAITING_DIGEST}",
                ExpressionAttributeNames={"#state": "state"},
                ConsistentRead=True,
            ).get("Item")
            if head and _AWAITING_DIGEST in head and head["state"]["S"] == ReviewState.PENDING.value:
                tasks.append(ReviewTask.model_validate_json(head["task"]["S"]))
        return tasks

    def _claimable(self, review_id: str) -> bool:
        head = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": review_id}, "sk": {"S": _REVIEW_SK}}, ConsistentRead=True
        ).get("Item")
        return bool(head) and _AWAITING_DIGEST in head and head["state"]["S"] == ReviewState.PENDING.value

    def create_batch(self, batch: StoredBatch) -> tuple[str, ...]:
        if len(batch.member_ids) > MAX_BATCH_MEMBERS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_MEMBERS} reviews, got {len(batch.member_ids)}")
        members = batch.member_ids
        for _ in range(3):  # a concurrent digest may claim some members first: drop those and try again
            if not members:
                return ()
            head: dict[str, Any] = {
                "pk": {"S": batch.batch_id},
                "sk": {"S": _BATCH_SK},
                "brand": {"S": batch.brand},
                "reviewers": {"L": [{"S": reviewer} for reviewer in batch.reviewers]},
                "members": {"L": [{"S": member} for member in members]},
                "created_at": {"S": batch.created_at.isoformat()},
                "expires_at": {"N": str(int(epoch_seconds(batch.expires_at)))},
                SWEEP_QUEUE: {"S": QUEUE_BATCH_EMAIL},
                SWEEP_AT: {"N": str(int(epoch_seconds(batch.expires_at)))},
            }
            claims = [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"pk": {"S": member}, "sk": {"S": _REVIEW_SK}},
                        "UpdateExpression": f"SET batch_id = :batch, {SWEEP_QUEUE} = :expire REMOVE {_AWAITING_DIGEST}",
                        "ConditionExpression": f"attribute_exists({_AWAITING_DIGEST}) AND #state = :pending",
                        "ExpressionAttributeNames": {"#state": "state"},
                        "ExpressionAttributeValues": {
                            ":batch": {"S": batch.batch_id},
                            ":pending": {"S": ReviewState.PENDING.value},
                            ":expire": {"S": QUEUE_EXPIRE},
                        },
                    }
                }
                for member in members
            ]
            put = {"Put": {"TableName": self.table, "Item": head, "ConditionExpression": "attribute_not_exists(pk)"}}
            try:
                self.client.transact_write_items(TransactItems=[put, *claims])
                return members
            except self.client.exceptions.TransactionCanceledException:
                members = tuple(member for member in members if self._claimable(member))
        return ()

    @staticmethod
    def _batch(row: dict[str, Any]) -> StoredBatch:
        return StoredBatch(
            batch_id=row["pk"]["S"],
            brand=row["brand"]["S"],
            reviewers=tuple(value["S"] for value in row["reviewers"]["L"]),
            member_ids=tuple(value["S"] for value in row["members"]["L"]),
            created_at=datetime.fromisoformat(row["created_at"]["S"]),
            expires_at=datetime.fromtimestamp(int(row["expires_at"]["N"]), UTC),
            emailed_at=parse_time(row.get("emailed_at", {}).get("S")),
            reminder_sent_at=parse_time(row.get("reminder_sent_at", {}).get("S")),
        )

    def get_batch(self, batch_id: str) -> StoredBatch | None:
        row = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": batch_id}, "sk": {"S": _BATCH_SK}}, ConsistentRead=True
        ).get("Item")
        return self._batch(row) if row else None

    def _batches(self, batch_ids: Iterator[str]) -> list[StoredBatch]:
        return [batch for batch in (self.get_batch(batch_id) for batch_id in batch_ids) if batch is not None]

    def batches_to_email(self, limit: int) -> list[StoredBatch]:
        return [b for b in self._batches(self._due(QUEUE_BATCH_EMAIL, limit)) if b.emailed_at is None]

    def batches_to_remind(self, now: datetime, remind_before: timedelta, limit: int) -> list[StoredBatch]:
        due = self._due(
            QUEUE_BATCH_REMIND, limit, up_to=int(epoch_seconds(now + remind_before)), after=int(epoch_seconds(now))
        )
        return [b for b in self._batches(due) if b.emailed_at is not None and b.reminder_sent_at is None]

    def mark_batch_emailed(self, batch_id: str, now: datetime) -> bool:
        return self._conditional_update(
            batch_id,
            f"SET emailed_at = :now, {SWEEP_QUEUE} = :remind",
            "attribute_exists(pk) AND attribute_not_exists(emailed_at)",
            {":now": {"S": now.isoformat()}, ":remind": {"S": QUEUE_BATCH_REMIND}},
            sk=_BATCH_SK,
        )

    def unmark_batch_emailed(self, batch_id: str) -> None:
        self._conditional_update(
            batch_id,
            f"SET {SWEEP_QUEUE} = :email REMOVE emailed_at",
            "attribute_exists(pk)",
            {":email": {"S": QUEUE_BATCH_EMAIL}},
            sk=_BATCH_SK,
        )

    def mark_batch_reminded(self, batch_id: str, now: datetime) -> bool:
        return self._conditional_update(
            batch_id,
            f"SET reminder_sent_at = :now REMOVE {SWEEP_QUEUE}, {SWEEP_AT}",
            "attribute_exists(pk) AND attribute_not_exists(reminder_sent_at)",
            {":now": {"S": now.isoformat()}},
            sk=_BATCH_SK,
        )

    def close_batch(self, batch_id: str) -> None:
        self._conditional_update(
            batch_id, f"REMOVE {SWEEP_QUEUE}, {SWEEP_AT}", "attribute_exists(pk)", None, sk=_BATCH_SK
        )
