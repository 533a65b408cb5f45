"""The review store on one SQLite file (`OUT/.review/reviews.sqlite`): the local runtime's adapter."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from functions.review.store import (
    AlreadyDecided,
    DecideResult,
    DecisionApplied,
    ReviewClosed,
    StoredReview,
    UnknownReviewError,
    epoch_seconds,
    parse_time,
)
from schemas.review import ReviewDecision, ReviewState, ReviewTask

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
                    epoch_seconds(task.expires_at),
                    epoch_seconds(task.created_at),
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
            reminder_sent_at=parse_time(row[3]),
            resumed_at=parse_time(row[4]),
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
                    epoch_seconds(now),
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
                    epoch_seconds(now),
                    epoch_seconds(now + remind_before),
                    ReviewState.PENDING.value,
                    limit,
                ),
            ).fetchall()
            return [review for review in (self._read(db, row[0]) for row in rows) if review is not None]

    def retry_later(self, review_id: str, at: datetime) -> None:
        """Locally the sweep reads every open review of the run anyway (a run is one review): nothing to reorder."""
