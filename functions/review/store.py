"""Pending reviews and their decisions: SQLite locally, DynamoDB on AWS, behind one small interface.

Every state change is a conditional write (item pending -> decided, batch pending -> decided | expired), so a
decision is applied at most once however many clicks, retries or threads race for it. The workflow's resume handle
(the Step Functions task token) is stored here and only here; `StoredReview` does not carry it, so a page or a log
line built from a review cannot leak it.

On AWS the DynamoDB store also keeps digest batches (`BatchStore`): a batch row (sk `batch`) lists its member reviews,
and is written in one transaction with each member's claim (`awaiting_digest` -> `batch_id`), so a review joins at
most one batch. Decisions stay on the member reviews.

The scheduled sweep and digest read bounded pages, never the whole table: on DynamoDB a review or batch row carries
`sweep_queue` (and `sweep_at`) only while it has scheduled work left, so the sparse index `sweep` holds just those
rows, per queue in `sweep_at` order (see `DynamoDBReviewStore`). A row leaves the index once its work is done.
"""

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from schemas.review import ReviewDecision, ReviewItem, ReviewOutcome, ReviewState, ReviewTask


@dataclass(frozen=True)
class StoredReview:
    """A batch as stored: the task, where it stands, and the decisions so far (by item id)."""

    task: ReviewTask
    state: ReviewState
    identity: str  # who the link was sent to: recorded as the reviewer of each decision
    decisions: dict[str, ReviewDecision]
    reminder_sent_at: datetime | None = None
    resumed_at: datetime | None = None
    awaiting_digest: bool = False  # stored, but its email goes out with the next digest (AWS)
    batch_id: str | None = None  # the emailed batch it belongs to; its link and reminders are the batch's

    @property
    def review_id(self) -> str:
        return self.task.review_id

    @property
    def pending_items(self) -> tuple[ReviewItem, ...]:
        return tuple(item for item in self.task.items if item.item_id not in self.decisions)

    def item(self, item_id: str) -> ReviewItem | None:
        return next((item for item in self.task.items if item.item_id == item_id), None)


@dataclass(frozen=True)
class DecisionApplied:
    decision: ReviewDecision


@dataclass(frozen=True)
class AlreadyDecided:
    """Someone decided this item first; `decision` says who and when."""

    decision: ReviewDecision


@dataclass(frozen=True)
class ReviewClosed:
    """The batch is no longer open (expired, or closed), so nothing more can be decided."""

    state: ReviewState


DecideResult = DecisionApplied | AlreadyDecided | ReviewClosed


@dataclass(frozen=True)
class StoredBatch:
    """Several reviews (one per product image on AWS) sent in one email behind one link. Decisions stay on the
    member reviews; the batch only says which members it holds, when its link expires and what was mailed."""

    batch_id: str
    brand: str
    reviewers: tuple[str, ...]
    member_ids: tuple[str, ...]
    created_at: datetime
    expires_at: datetime  # the earliest member expiry: every member is still decidable while the link works
    emailed_at: datetime | None = None
    reminder_sent_at: datetime | None = None


class UnknownReviewError(LookupError):
    pass


class ReviewStore(Protocol):
    def create(
        self, task: ReviewTask, identity: str, resume_handle: str | None, awaiting_digest: bool = False
    ) -> None: ...

    def get(self, review_id: str) -> StoredReview | None: ...

    def resume_handle(self, review_id: str) -> str | None: ...

    def decide(self, review_id: str, decision: ReviewDecision, now: datetime) -> DecideResult:
        """Record `decision` if its item is pending and the batch is open and unexpired at `now`."""
        ...

    def close_if_decided(self, review_id: str) -> bool:
        """pending -> decided once every item is decided. True for exactly one caller: the one that resumes."""
        ...

    def expire(self, review_id: str) -> bool:
        """pending -> expired. True for exactly one caller."""
        ...

    def mark_reminded(self, review_id: str, now: datetime) -> bool:
        """Record that the reminder went out; True only the first time."""
        ...

    def mark_resumed(self, review_id: str, now: datetime) -> None:
        """The waiting workflow was told (resumed, or failed for expiry): the sweep has nothing left to do here."""
        ...

    def open_reviews(self, now: datetime, remind_before: timedelta, limit: int) -> list[StoredReview]:
        """At most `limit` reviews with work for the sweep at `now`: decided or expired ones whose workflow was not
        told yet (a resume or an expiry report that failed), pending ones past their expiry, and pending ones within
        `remind_before` of it with no reminder sent. Most urgent first."""
        ...

    def retry_later(self, review_id: str, at: datetime) -> None:
        """Telling the workflow failed again: look at this review after `at`, behind the others due now."""
        ...


# A batch is written in one transaction with the claims of its members, and a transaction holds at most 100 writes.
MAX_BATCH_MEMBERS = 99
# What one scheduled run reads at most (the sweep Lambda has 4 minutes; each review may cost a Step Functions call).
SWEEP_MAX_REVIEWS = 200
DIGEST_MAX_REVIEWS = 500  # ten digest emails of 50 images per run
SWEEP_MAX_BATCHES = 100


class BatchStore(Protocol):
    """Digest batches (AWS): reviews created `awaiting_digest` are claimed into batches that are emailed once."""

    def awaiting_digest(self, now: datetime, limit: int) -> list[ReviewTask]:
        """At most `limit` unexpired pending reviews that no batch has claimed yet, the soonest to expire first."""
        ...

    def create_batch(self, batch: StoredBatch) -> tuple[str, ...]:
        """Write the batch and claim its members atomically; a member another batch claimed first (or that is no
        longer pending) is left out. Returns the members claimed; none claimed -> nothing written."""
        ...

    def get_batch(self, batch_id: str) -> StoredBatch | None: ...

    def batches_to_email(self, limit: int) -> list[StoredBatch]:
        """At most `limit` batches whose first email has not been sent."""
        ...

    def batches_to_remind(self, now: datetime, remind_before: timedelta, limit: int) -> list[StoredBatch]:
        """At most `limit` emailed batches, unexpired but within `remind_before` of expiry, with no reminder yet."""
        ...

    def mark_batch_emailed(self, batch_id: str, now: datetime) -> bool:
        """True for exactly one caller: the one that sends the email."""
        ...

    def unmark_batch_emailed(self, batch_id: str) -> None:
        """Sending failed: let the next digest run try again."""
        ...

    def mark_batch_reminded(self, batch_id: str, now: datetime) -> bool: ...

    def close_batch(self, batch_id: str) -> None:
        """Nothing more to email for this batch (every member is decided or expired): no run reads it again."""
        ...


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


# -- SQLite (local) -------------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    review_id TEXT PRIMARY KEY,
    task_json TEXT NOT NULL,
    identity TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL,
    resume_handle TEXT,
    reminder_sent_at TEXT,
    resumed_at TEXT
);
CREATE TABLE IF NOT EXISTS items (
    review_id TEXT NOT NULL REFERENCES reviews(review_id),
    item_id TEXT NOT NULL,
    state TEXT NOT NULL,
    decision_json TEXT,
    PRIMARY KEY (review_id, item_id)
);
"""


class SQLiteReviewStore:
    """One database file; a connection per operation so the threaded local server can share the store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30)
        try:
            db.executescript(_SCHEMA)  # commits on its own, so it cannot run inside _transaction
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None + BEGIN IMMEDIATE: the write lock is taken up front, so check-then-write is atomic.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def create(self, task: ReviewTask, identity: str, resume_handle: str | None, awaiting_digest: bool = False) -> None:
        if awaiting_digest:
            # A local run is one batch already; it emails its own link (functions/review/local_flow.py).
            raise ValueError("digest batching is for the DynamoDB store; a local review is emailed when created")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO reviews (review_id, task_json, identity, state, expires_at, created_at, resume_handle) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    task.review_id,
                    task.model_dump_json(),
                    identity,
                    ReviewState.PENDING.value,
                    _ts(task.expires_at),
                    _ts(task.created_at),
                    resume_handle,
                ),
            )
            db.executemany(
                "INSERT INTO items (review_id, item_id, state) VALUES (?, ?, ?)",
                [(task.review_id, item.item_id, ReviewState.PENDING.value) for item in task.items],
            )

    def _read(self, db: sqlite3.Connection, review_id: str) -> StoredReview | None:
        row = db.execute(
            "SELECT task_json, identity, state, reminder_sent_at, resumed_at FROM reviews WHERE review_id = ?",
            (review_id,),
        ).fetchone()
        if row is None:
            return None
        decided = db.execute(
            "SELECT decision_json FROM items WHERE review_id = ? AND state = ?", (review_id, ReviewState.DECIDED.value)
        ).fetchall()
        decisions = {d.item_id: d for d in (ReviewDecision.model_validate_json(r[0]) for r in decided)}
        return StoredReview(
            task=ReviewTask.model_validate_json(row[0]),
            identity=row[1],
            state=ReviewState(row[2]),
            decisions=decisions,
            reminder_sent_at=_parse_time(row[3]),
            resumed_at=_parse_time(row[4]),
        )

    def get(self, review_id: str) -> StoredReview | None:
        with self._transaction() as db:
            return self._read(db, review_id)

    def latest(self) -> StoredReview | None:
        """The most recently created batch (for `catalog review reissue OUT`)."""
        with self._transaction() as db:
            row = db.execute("SELECT review_id FROM reviews ORDER BY created_at DESC LIMIT 1").fetchone()
            return self._read(db, row[0]) if row else None

    def resume_handle(self, review_id: str) -> str | None:
        with self._transaction() as db:
            row = db.execute("SELECT resume_handle FROM reviews WHERE review_id = ?", (review_id,)).fetchone()
        return row[0] if row else None

    def decide(self, review_id: str, decision: ReviewDecision, now: datetime) -> DecideResult:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE items SET state = ?, decision_json = ? "
                "WHERE review_id = ? AND item_id = ? AND state = ? "
                "AND EXISTS (SELECT 1 FROM reviews WHERE review_id = ? AND state = ? AND expires_at > ?)",
                (
                    ReviewState.DECIDED.value,
                    decision.model_dump_json(),
                    review_id,
                    decision.item_id,
                    ReviewState.PENDING.value,
                    review_id,
                    ReviewState.PENDING.value,
                    _ts(now),
                ),
            )
            if cursor.rowcount == 1:
                return DecisionApplied(decision)
            item = db.execute(
                "SELECT state, decision_json FROM items WHERE review_id = ? AND item_id = ?",
                (review_id, decision.item_id),
            ).fetchone()
            review = db.execute("SELECT state FROM reviews WHERE review_id = ?", (review_id,)).fetchone()
        if item is None or review is None:
            raise UnknownReviewError(f"no item {decision.item_id!r} in review {review_id!r}")
        if item[0] == ReviewState.DECIDED.value:
            return AlreadyDecided(ReviewDecision.model_validate_json(item[1]))
        # Still pending in the table but past its expiry: closed, even before the expiry sweep marks it.
        state = ReviewState(review[0])
        return ReviewClosed(ReviewState.EXPIRED if state is ReviewState.PENDING else state)

    def _transition(self, review_id: str, target: ReviewState, extra_condition: str = "") -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE reviews SET state = ? WHERE review_id = ? AND state = ? {extra_condition}",  # noqa: S608
                (target.value, review_id, ReviewState.PENDING.value),
            )
            return cursor.rowcount == 1

    def close_if_decided(self, review_id: str) -> bool:
        return self._transition(
            review_id,
            ReviewState.DECIDED,
            "AND NOT EXISTS (SELECT 1 FROM items "
            "WHERE items.review_id = reviews.review_id AND items.state = 'pending')",
        )

    def expire(self, review_id: str) -> bool:
        return self._transition(review_id, ReviewState.EXPIRED)

    def mark_reminded(self, review_id: str, now: datetime) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE reviews SET reminder_sent_at = ? WHERE review_id = ? AND reminder_sent_at IS NULL",
                (now.isoformat(), review_id),
            )
            return cursor.rowcount == 1

    def mark_resumed(self, review_id: str, now: datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE reviews SET resumed_at = ? WHERE review_id = ?", (now.isoformat(), review_id))

    def open_reviews(self, now: datetime, remind_before: timedelta, limit: int) -> list[StoredReview]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT review_id FROM reviews WHERE (state IN (?, ?) AND resumed_at IS NULL) "
                "OR (state = ? AND (expires_at <= ? OR (expires_at <= ? AND reminder_sent_at IS NULL))) "
                "ORDER BY state = ?, expires_at LIMIT ?",
                (
                    ReviewState.DECIDED.value,
                    ReviewState.EXPIRED.value,
                    ReviewState.PENDING.value,
                    _ts(now),
                    _ts(now + remind_before),
                    ReviewState.PENDING.value,
                    limit,
                ),
            ).fetchall()
            return [review for review in (self._read(db, row[0]) for row in rows) if review is not None]

    def retry_later(self, review_id: str, at: datetime) -> None:
        """Locally the sweep reads every open review of the run anyway (a run is one review): nothing to reorder."""


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
            "expires_at": {"N": str(int(_ts(task.expires_at)))},
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
            reminder_sent_at=_parse_time(head.get("reminder_sent_at", {}).get("S")),
            resumed_at=_parse_time(head.get("resumed_at", {}).get("S")),
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
                                ":now": {"N": str(int(_ts(now)))},
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
            {":at": {"N": str(int(_ts(at)))}, ":tell": {"S": QUEUE_TELL}},
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
        now_s, horizon = int(_ts(now)), int(_ts(now + remind_before))
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
        for review_id in self._due(QUEUE_DIGEST, limit, after=int(_ts(now))):
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
                "expires_at": {"N": str(int(_ts(batch.expires_at)))},
                SWEEP_QUEUE: {"S": QUEUE_BATCH_EMAIL},
                SWEEP_AT: {"N": str(int(_ts(batch.expires_at)))},
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
            emailed_at=_parse_time(row.get("emailed_at", {}).get("S")),
            reminder_sent_at=_parse_time(row.get("reminder_sent_at", {}).get("S")),
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
        due = self._due(QUEUE_BATCH_REMIND, limit, up_to=int(_ts(now + remind_before)), after=int(_ts(now)))
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


def now_utc() -> datetime:
    return datetime.now(UTC)


def decisions_in_item_order(review: StoredReview) -> tuple[ReviewDecision, ...]:
    return tuple(review.decisions[i.item_id] for i in review.task.items if i.item_id in review.decisions)


def outcome_json(review: StoredReview) -> str:
    """The decisions JSON the workflow resumes with (compact; Step Functions output is capped at 256 KB)."""
    outcome = ReviewOutcome(
        review_id=review.review_id,
        state=review.state,
        decisions=decisions_in_item_order(review),
        pending_item_ids=tuple(item.item_id for item in review.pending_items),
    )
    return json.dumps(outcome.model_dump(mode="json"), separators=(",", ":"))
