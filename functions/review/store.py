"""Pending reviews and their decisions: the interface both runtimes' stores implement, and what they share.

The stores are adapters: SQLite locally (`functions/adapters/local/review_store.py`), DynamoDB on AWS
(`functions/adapters/aws/review_store.py`). Every state change is a conditional write (item pending -> decided,
batch pending -> decided | expired), so a decision is applied at most once however many clicks, retries or threads
race for it. The workflow's resume handle (the Step Functions task token) is stored there and only there;
`StoredReview` does not carry it, so a page or a log line built from a review cannot leak it.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

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


def epoch_seconds(moment: datetime) -> float:
    return moment.timestamp()


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


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
