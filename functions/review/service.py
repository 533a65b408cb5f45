"""What a review link can do, independent of where it is served (loopback server or API Gateway + Lambda).

`open` (GET) verifies the link and reads; it never writes. `decide` (POST) verifies the link and the CSRF token,
applies each decision with a conditional write, and when the last item is decided, resumes the workflow exactly
once. `sweep` (scheduled) sends reminders, expires batches and retries a resume that failed.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import ValidationError

from schemas.review import RejectionReason, ReviewDecision, ReviewItem, ReviewState, ReviewTask, Verdict

from .signing import (
    LinkParams,
    LinkRefusedError,
    SigningKeys,
    check_csrf,
    csrf_token,
    new_review_id,
    sign_link,
    verify_link,
)
from .store import (
    AlreadyDecided,
    DecideResult,
    DecisionApplied,
    ReviewStore,
    StoredReview,
    now_utc,
    outcome_json,
)

logger = logging.getLogger(__name__)

AUTO_REVIEWER = "auto (no person reviewed)"


class ResumeStatus(StrEnum):
    RESUMED = "resumed"
    ALREADY_CLOSED = "already_closed"  # the workflow timed out, was stopped, or the token is no longer valid
    DEFERRED = "deferred"  # resuming failed for a transient reason; the scheduled sweep retries it


class Resumer(Protocol):
    """Continues whatever waits for the batch: a Step Functions execution on AWS, the local run locally."""

    def resume(self, review_id: str, handle: str | None, outcome: str) -> ResumeStatus: ...

    def fail_expired(self, review_id: str, handle: str | None, cause: str) -> ResumeStatus: ...


class CsrfRefusedError(Exception):
    pass


class BadDecisionError(ValueError):
    """The request names an item not in the batch, or a rejection without a reason: a 400, nothing applied."""


@dataclass(frozen=True)
class DecisionRequest:
    item_id: str
    verdict: Verdict
    reason: RejectionReason | None = None
    note: str | None = None


@dataclass(frozen=True)
class DecideOutcome:
    results: list[tuple[str, DecideResult]]
    review: StoredReview
    resume: ResumeStatus | None = None

    @property
    def applied(self) -> int:
        return sum(isinstance(result, DecisionApplied) for _, result in self.results)


@dataclass
class SweepReport:
    reminded: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


def describe_result(result: DecideResult) -> str:
    """The sentence a reviewer sees for one item."""
    if isinstance(result, DecisionApplied):
        return f"{result.decision.verdict.value.capitalize()}."
    if isinstance(result, AlreadyDecided):
        decision = result.decision
        when = decision.decided_at.strftime("%Y-%m-%d %H:%M UTC")
        return f"Already decided ({decision.verdict.value}) by {decision.reviewer} at {when}."
    return f"This review is {result.state.value}; nothing more can be decided."


class ReviewService:
    def __init__(
        self,
        store: ReviewStore,
        keys: SigningKeys,
        resumer: Resumer,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.store, self.keys, self.resumer, self.clock = store, keys, resumer, clock

    # -- creating ------------------------------------------------------------------------------------------------

    def create(
        self,
        brand: str,
        reviewers: Sequence[str],
        items: Sequence[ReviewItem],
        ttl: timedelta,
        resume_handle: str | None = None,
        reissued_from: str | None = None,
    ) -> tuple[ReviewTask, LinkParams]:
        now = self.clock()
        task = ReviewTask(
            review_id=new_review_id(),
            brand=brand,
            reviewers=tuple(reviewers),
            items=tuple(items),
            created_at=now,
            expires_at=now + ttl,
            reissued_from=reissued_from,
        )
        # The identity recorded with every decision is who the link went to, never what a request claims.
        self.store.create(task, ", ".join(task.reviewers), resume_handle)
        return task, self.link_for(task)

    def link_for(self, task: ReviewTask) -> LinkParams:
        return sign_link(self.keys, task.review_id, int(task.expires_at.timestamp()))

    def reissue(
        self, review_id: str, ttl: timedelta, resume_handle: str | None = None
    ) -> tuple[ReviewTask, LinkParams]:
        """A new batch (new id, new link) for the items an expired batch left pending."""
        review = self.store.get(review_id)
        if review is None:
            raise LookupError(f"no review {review_id!r}")
        if review.state is ReviewState.PENDING and self.clock() >= review.task.expires_at:
            self.expire(review_id)
            review = self.store.get(review_id) or review
        if review.state is not ReviewState.EXPIRED:
            raise ValueError(f"review {review_id} is {review.state.value}; only an expired review can be re-issued")
        if not review.pending_items:
            raise ValueError(f"review {review_id} has no pending items left")
        return self.create(
            review.task.brand, review.task.reviewers, review.pending_items, ttl, resume_handle, review_id
        )

    # -- GET -----------------------------------------------------------------------------------------------------

    def open(self, review_id: str, fields: dict[str, str]) -> tuple[StoredReview, LinkParams]:
        """Verify the link and read the batch. Never writes anything."""
        params = LinkParams.from_fields(review_id, fields)
        verify_link(self.keys, params, self.clock().timestamp())
        review = self.store.get(review_id)
        if review is None:  # a valid signature for a deleted review: refuse like any bad link
            raise LinkRefusedError("unknown review")
        return review, params

    def csrf(self, params: LinkParams) -> str:
        return csrf_token(self.keys, params)

    # -- POST ----------------------------------------------------------------------------------------------------

    def decide(
        self,
        review_id: str,
        fields: dict[str, str],
        csrf: str,
        requests: Sequence[DecisionRequest],
        approve_all: bool = False,
        identity: str | None = None,
    ) -> DecideOutcome:
        review, params = self.open(review_id, fields)
        if not check_csrf(self.keys, params, csrf):
            raise CsrfRefusedError("bad CSRF token")
        reviewer = identity or review.identity
        if approve_all:
            requests = [DecisionRequest(item.item_id, Verdict.APPROVED) for item in review.pending_items]
        if not requests:
            raise BadDecisionError("no decision in the request")

        now = self.clock()
        decisions = []
        for request in requests:  # validate everything before applying anything
            if review.item(request.item_id) is None:
                raise BadDecisionError(f"item {request.item_id!r} is not part of this review")
            try:
                decisions.append(
                    ReviewDecision(
                        item_id=request.item_id,
                        verdict=request.verdict,
                        reason=request.reason if request.verdict is Verdict.REJECTED else None,
                        note=(request.note or "").strip() or None,
                        reviewer=reviewer,
                        decided_at=now,
                    )
                )
            except ValidationError as error:
                raise BadDecisionError(error.errors()[0]["msg"].removeprefix("Value error, ")) from error

        results: list[tuple[str, DecideResult]] = [
            (decision.item_id, self.store.decide(review_id, decision, now)) for decision in decisions
        ]
        resume = None
        if any(isinstance(result, DecisionApplied) for _, result in results) and self.store.close_if_decided(review_id):
            resume = self._resume(review_id)
        fresh = self.store.get(review_id) or review
        logger.info(
            "review decisions recorded",
            extra={"review_id": review_id, "applied": sum(isinstance(r, DecisionApplied) for _, r in results)},
        )
        return DecideOutcome(results, fresh, resume)

    def approve_everything(self, review_id: str, reviewer: str = AUTO_REVIEWER) -> DecideOutcome:
        """`--review auto`: approve every pending item without a link, recording that no person reviewed."""
        review = self.store.get(review_id)
        if review is None:
            raise LookupError(f"no review {review_id!r}")
        now = self.clock()
        results: list[tuple[str, DecideResult]] = []
        for item in review.pending_items:
            decision = ReviewDecision(item_id=item.item_id, verdict=Verdict.APPROVED, reviewer=reviewer, decided_at=now)
            results.append((item.item_id, self.store.decide(review_id, decision, now)))
        resume = self._resume(review_id) if self.store.close_if_decided(review_id) else None
        return DecideOutcome(results, self.store.get(review_id) or review, resume)

    # -- closing -------------------------------------------------------------------------------------------------

    def _resume(self, review_id: str) -> ResumeStatus:
        review = self.store.get(review_id)
        assert review is not None
        try:
            status = self.resumer.resume(review_id, self.store.resume_handle(review_id), outcome_json(review))
        except Exception:
            # The decisions are safely stored; the sweep retries the resume. Never log the handle itself.
            logger.exception("resuming the workflow failed; the sweep retries it", extra={"review_id": review_id})
            return ResumeStatus.DEFERRED
        self.store.mark_resumed(review_id, self.clock())
        return status

    def expire(self, review_id: str) -> ResumeStatus | None:
        """pending -> expired, and tell whatever waits. None when the batch was no longer pending."""
        if not self.store.expire(review_id):
            return None
        review = self.store.get(review_id)
        assert review is not None
        cause = (
            f"Review {review_id} expired with {len(review.pending_items)} of {len(review.task.items)} item(s) "
            "undecided; its owner can re-issue a link."
        )
        try:
            status = self.resumer.fail_expired(review_id, self.store.resume_handle(review_id), cause)
        except Exception:
            logger.exception("reporting the expiry failed", extra={"review_id": review_id})
            return ResumeStatus.DEFERRED
        self.store.mark_resumed(review_id, self.clock())
        return status

    def sweep(self, remind_before: timedelta, send_reminder: Callable[[StoredReview, LinkParams], None]) -> SweepReport:
        """Scheduled: remind once before expiry, expire what is past its time, retry resumes that failed."""
        report = SweepReport()
        now = self.clock()
        for review in self.store.open_reviews():
            review_id = review.review_id
            if review.state is ReviewState.DECIDED:
                if self._resume(review_id) is not ResumeStatus.DEFERRED:
                    report.resumed.append(review_id)
            elif review.state is ReviewState.EXPIRED:
                continue
            elif now >= review.task.expires_at:
                if self.expire(review_id) is not None:
                    report.expired.append(review_id)
            elif (
                review.task.expires_at - now <= remind_before
                and review.reminder_sent_at is None
                # Mark first, then send: a crash between the two loses one reminder rather than spamming.
                and self.store.mark_reminded(review_id, now)
            ):
                send_reminder(review, self.link_for(review.task))
                report.reminded.append(review_id)
        return report
