"""What a review link can do, independent of where it is served (loopback server or API Gateway + Lambda).

`open` (GET) verifies the link and reads; it never writes. `decide` (POST) verifies the link and the CSRF token,
applies each decision with a conditional write, and when the last item is decided, resumes the workflow exactly
once. `sweep` (scheduled) sends reminders, expires batches and retries a resume that failed.

On AWS every product image is its own review (one workflow execution each), created `awaiting_digest`; `digest`
(scheduled) gathers those per brand and reviewer list into a `StoredBatch` and sends ONE email with one link. That
link opens a view over the member reviews: a decision is applied to its member review, and each member resumes its
own execution when its last item is decided.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import ValidationError

from functions.review.signing import (
    ImageParams,
    LinkParams,
    LinkRefusedError,
    SigningKeys,
    check_csrf,
    csrf_token,
    new_review_id,
    sign_image,
    sign_link,
    verify_image,
    verify_link,
)
from functions.review.store import (
    DIGEST_MAX_REVIEWS,
    MAX_BATCH_MEMBERS,
    SWEEP_MAX_BATCHES,
    SWEEP_MAX_REVIEWS,
    AlreadyDecided,
    BatchStore,
    DecideResult,
    DecisionApplied,
    ReviewStore,
    StoredBatch,
    StoredReview,
    now_utc,
    outcome_json,
)
from schemas.review import RejectionReason, ReviewDecision, ReviewItem, ReviewState, ReviewTask, Verdict

logger = logging.getLogger(__name__)

AUTO_REVIEWER = "auto (no person reviewed)"
# Images per digest email: one DynamoDB transaction per batch, and a page a person gets through in one sitting.
DIGEST_MAX_IMAGES = 50
assert DIGEST_MAX_IMAGES <= MAX_BATCH_MEMBERS

SendBatchEmail = Callable[[StoredReview, LinkParams], None]
TimeLeftMs = Callable[[], int]  # a Lambda context's get_remaining_time_in_millis
STOP_WITH_MS_LEFT = 30_000  # a scheduled run takes no new review or batch with less time than this left
RETRY_TELLING_AFTER = timedelta(minutes=15)  # a resume or expiry report that failed again waits behind the others


def _out_of_time(time_left_ms: TimeLeftMs | None) -> bool:
    return time_left_ms is not None and time_left_ms() < STOP_WITH_MS_LEFT


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


@dataclass(frozen=True)
class _ItemRoute:
    """Where a batch page's item lives: its member review and its own item id there."""

    review_id: str
    item_id: str


@dataclass
class SweepReport:
    reminded: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    expiry_reported: list[str] = field(default_factory=list)  # expired earlier; reporting it had failed until now
    stopped_early: bool = False  # the run's time ran short: the next run goes on from the store's queues


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
        batches: BatchStore | None = None,
    ) -> None:
        self.store, self.keys, self.resumer, self.clock = store, keys, resumer, clock
        self.batches = batches  # digest batches (AWS); None locally, where a run is one review already

    # -- creating ------------------------------------------------------------------------------------------------

    def create(
        self,
        brand: str,
        reviewers: Sequence[str],
        items: Sequence[ReviewItem],
        ttl: timedelta,
        resume_handle: str | None = None,
        reissued_from: str | None = None,
        awaiting_digest: bool = False,
    ) -> tuple[ReviewTask, LinkParams]:
        """Store a review. With `awaiting_digest` nobody is emailed now: the next `digest` batches it."""
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
        self.store.create(task, ", ".join(task.reviewers), resume_handle, awaiting_digest)
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
        """Verify the link and read the review or digest batch. Never writes anything."""
        params = LinkParams.from_fields(review_id, fields)
        verify_link(self.keys, params, self.clock().timestamp())
        review = self.view(review_id)
        if review is None:  # a valid signature for a deleted review: refuse like any bad link
            raise LinkRefusedError("unknown review")
        return review, params

    def view(self, review_id: str) -> StoredReview | None:
        """A review, or a digest batch shown as one review over all its members' items. No link check."""
        loaded = self._load(review_id)
        return loaded[0] if loaded else None

    def _load(self, review_id: str) -> tuple[StoredReview, dict[str, _ItemRoute] | None] | None:
        review = self.store.get(review_id)
        if review is not None:
            return review, None
        batch = self.batches.get_batch(review_id) if self.batches is not None else None
        return self._batch_view(batch) if batch is not None else None

    def _batch_view(self, batch: StoredBatch) -> tuple[StoredReview, dict[str, _ItemRoute]] | None:
        members = [m for m in (self.store.get(member_id) for member_id in batch.member_ids) if m is not None]
        if not members:
            return None
        seen: dict[str, int] = defaultdict(int)
        for member in members:
            for item in member.task.items:
                seen[item.item_id] += 1
        items, decisions, routes = [], {}, {}
        for index, member in enumerate(members):
            for item in member.task.items:
                # Items keep their ids (unique on AWS: job ids); only ids two images share get the member's index.
                page_id = item.item_id if seen[item.item_id] == 1 else f"{index}-{item.item_id}"
                routes[page_id] = _ItemRoute(member.review_id, item.item_id)
                items.append(item.model_copy(update={"item_id": page_id}))
                if item.item_id in member.decisions:
                    decisions[page_id] = member.decisions[item.item_id].model_copy(update={"item_id": page_id})
        states = {member.state for member in members}
        if ReviewState.PENDING in states:
            state = ReviewState.PENDING
        elif states <= {ReviewState.DECIDED}:
            state = ReviewState.DECIDED
        else:
            state = ReviewState.EXPIRED
        task = ReviewTask(
            review_id=batch.batch_id,
            brand=batch.brand,
            reviewers=batch.reviewers,
            items=tuple(items),
            created_at=batch.created_at,
            expires_at=batch.expires_at,
        )
        identity = ", ".join(batch.reviewers)
        view = StoredReview(task, state, identity, decisions, reminder_sent_at=batch.reminder_sent_at)
        return view, routes

    def csrf(self, params: LinkParams) -> str:
        return csrf_token(self.keys, params)

    # -- images (GET) --------------------------------------------------------------------------------------------

    def image_capability(self, review_id: str, item_id: str, kind: str, expires: int) -> ImageParams:
        """An image-only capability for one item's image: what email thumbnails and page images carry."""
        return sign_image(self.keys, review_id, item_id, kind, expires)

    def open_image(
        self, review_id: str, item_id: str, kind: str, fields: dict[str, str]
    ) -> tuple[StoredReview, ReviewItem | None]:
        """Verify an image request and read the review. It may carry the image capability for exactly this image
        (`t`), or the review link itself (`s`), whose holder may see every image anyway. Never writes anything."""
        if "t" in fields and "s" not in fields:
            image = ImageParams.from_fields(review_id, item_id, kind, fields)
            verify_image(self.keys, image, self.clock().timestamp())
            review = self.view(review_id)
            if review is None:
                raise LinkRefusedError("unknown review")
        else:
            review, _ = self.open(review_id, fields)
        return review, review.item(item_id)

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
        params = LinkParams.from_fields(review_id, fields)
        verify_link(self.keys, params, self.clock().timestamp())
        loaded = self._load(review_id)
        if loaded is None:
            raise LinkRefusedError("unknown review")
        review, routes = loaded
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

        results: list[tuple[str, DecideResult]] = []
        touched: list[str] = []  # member reviews with a decision applied now, in order
        for decision in decisions:
            route = routes.get(decision.item_id) if routes is not None else None
            if route is None:
                target, result = review_id, self.store.decide(review_id, decision, now)
            else:  # a digest batch: the decision belongs to the member review that holds the item
                target = route.review_id
                result = _on_page(
                    self.store.decide(target, decision.model_copy(update={"item_id": route.item_id}), now),
                    decision.item_id,
                )
            results.append((decision.item_id, result))
            if isinstance(result, DecisionApplied) and target not in touched:
                touched.append(target)
        # Each review whose last item was just decided resumes its own workflow, exactly once (conditional close).
        statuses = [self._resume(target) for target in touched if self.store.close_if_decided(target)]
        fresh = self.view(review_id) or review
        logger.info(
            "review decisions recorded",
            extra={"review_id": review_id, "applied": sum(isinstance(r, DecisionApplied) for _, r in results)},
        )
        return DecideOutcome(results, fresh, _combined(statuses))

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
        return self._report_expiry(review_id)

    def _report_expiry(self, review_id: str) -> ResumeStatus:
        """Fail the waiting workflow with the expiry. On failure the review stays untold, and the sweep retries."""
        review = self.store.get(review_id)
        assert review is not None
        cause = (
            f"Review {review_id} expired with {len(review.pending_items)} of {len(review.task.items)} item(s) "
            "undecided; its owner can re-issue a link."
        )
        try:
            status = self.resumer.fail_expired(review_id, self.store.resume_handle(review_id), cause)
        except Exception:
            logger.exception("reporting the expiry failed; the sweep retries it", extra={"review_id": review_id})
            return ResumeStatus.DEFERRED
        self.store.mark_resumed(review_id, self.clock())
        return status

    # -- digest batches (AWS) ------------------------------------------------------------------------------------

    def digest(
        self,
        send: SendBatchEmail,
        time_left_ms: TimeLeftMs | None = None,
        max_reviews: int | None = None,
        max_batches: int | None = None,
    ) -> list[str]:
        """Scheduled: gather the reviews awaiting a digest per brand and reviewer list into batches, and email each
        batch once (one message, one link). Returns the ids of the batches emailed by this run.

        Bounded: at most `max_reviews` reviews and `max_batches` batches are read, and no new batch is formed or
        emailed once `time_left_ms()` runs short; what is left waits in the store's queues for the next run.
        The bounds default to DIGEST_MAX_REVIEWS and SWEEP_MAX_BATCHES."""
        if self.batches is None:
            raise ValueError("digest batching needs a batch store (DynamoDB); a local run emails its review itself")
        now = self.clock()
        groups: dict[tuple[str, tuple[str, ...]], list[ReviewTask]] = defaultdict(list)
        for task in self.batches.awaiting_digest(now, max_reviews or DIGEST_MAX_REVIEWS):
            groups[(task.brand, tuple(task.reviewers))].append(task)
        for (brand, reviewers), tasks in groups.items():
            tasks.sort(key=lambda task: (task.items[0].sku, task.created_at))  # the page groups by product
            for start in range(0, len(tasks), DIGEST_MAX_IMAGES):
                if _out_of_time(time_left_ms):
                    break
                chunk = tasks[start : start + DIGEST_MAX_IMAGES]
                batch = StoredBatch(
                    batch_id=new_review_id(),
                    brand=brand,
                    reviewers=reviewers,
                    member_ids=tuple(task.review_id for task in chunk),
                    created_at=now,
                    expires_at=min(task.expires_at for task in chunk),
                )
                claimed = self.batches.create_batch(batch)
                if claimed:
                    logger.info("digest batch formed", extra={"batch_id": batch.batch_id, "reviews": len(claimed)})

        emailed: list[str] = []
        for batch in self.batches.batches_to_email(max_batches or SWEEP_MAX_BATCHES):
            if _out_of_time(time_left_ms):
                break
            # Mark first, then send: a batch is emailed at most once. A failed send is unmarked for the next run;
            # a crash between the two is covered by the reminder that still goes out before the link expires.
            if not self.batches.mark_batch_emailed(batch.batch_id, now):
                continue
            loaded = self._batch_view(batch)
            if loaded is None or loaded[0].state is not ReviewState.PENDING:
                continue  # every member expired or was decided meanwhile: nothing to ask
            view = loaded[0]
            try:
                send(view, self.link_for(view.task))
            except Exception:
                self.batches.unmark_batch_emailed(batch.batch_id)
                logger.exception(
                    "sending the digest email failed; the next run retries it", extra={"batch_id": batch.batch_id}
                )
                continue
            emailed.append(batch.batch_id)
        return emailed

    def _remind_batches(
        self, now: datetime, remind_before: timedelta, send_reminder: SendBatchEmail, time_left_ms: TimeLeftMs | None
    ) -> list[str]:
        if self.batches is None:
            return []
        reminded = []
        for batch in self.batches.batches_to_remind(now, remind_before, SWEEP_MAX_BATCHES):
            if _out_of_time(time_left_ms):
                break
            if batch.expires_at - now > remind_before:
                continue
            loaded = self._batch_view(batch)
            if loaded is None or loaded[0].state is not ReviewState.PENDING:
                self.batches.close_batch(batch.batch_id)  # nobody left to remind: no later run reads it again
                continue
            if self.batches.mark_batch_reminded(batch.batch_id, now):  # mark, then send, as for a single review
                send_reminder(loaded[0], self.link_for(loaded[0].task))
                reminded.append(batch.batch_id)
        return reminded

    def sweep(
        self,
        remind_before: timedelta,
        send_reminder: SendBatchEmail,
        time_left_ms: TimeLeftMs | None = None,
        max_reviews: int | None = None,
    ) -> SweepReport:
        """Scheduled: remind once before expiry, expire what is past its time, retry resumes and expiry reports that
        failed.

        Expiry and resumes are per review (each fails or resumes its own workflow); a review in a digest batch is
        reminded with its batch, in one message for the batch. Bounded: the store hands over at most `max_reviews`
        (default SWEEP_MAX_REVIEWS) reviews that have work due, most urgent first, and the run stops taking new ones
        once `time_left_ms()` runs short; the rest stay due for the next run."""
        report = SweepReport()
        now = self.clock()
        for review in self.store.open_reviews(now, remind_before, max_reviews or SWEEP_MAX_REVIEWS):
            if _out_of_time(time_left_ms):
                report.stopped_early = True
                break
            review_id = review.review_id
            if review.state is ReviewState.DECIDED:
                if self._resume(review_id) is ResumeStatus.DEFERRED:
                    self.store.retry_later(review_id, now + RETRY_TELLING_AFTER)
                else:
                    report.resumed.append(review_id)
            elif review.state is ReviewState.EXPIRED:
                if review.resumed_at is not None:
                    continue
                # Expired by an earlier run whose SendTaskFailure failed: report it again.
                if self._report_expiry(review_id) is ResumeStatus.DEFERRED:
                    self.store.retry_later(review_id, now + RETRY_TELLING_AFTER)
                else:
                    report.expiry_reported.append(review_id)
            elif now >= review.task.expires_at:
                if self.expire(review_id) is not None:
                    report.expired.append(review_id)
            elif (
                review.batch_id is None
                and not review.awaiting_digest
                and review.task.expires_at - now <= remind_before
                and review.reminder_sent_at is None
                # Mark first, then send: a crash between the two loses one reminder rather than spamming.
                and self.store.mark_reminded(review_id, now)
            ):
                send_reminder(review, self.link_for(review.task))
                report.reminded.append(review_id)
        if not report.stopped_early:
            report.reminded.extend(self._remind_batches(now, remind_before, send_reminder, time_left_ms))
        return report


def _on_page(result: DecideResult, page_item_id: str) -> DecideResult:
    """A member review's result, named by the item's id on the batch page."""
    if isinstance(result, DecisionApplied):
        return DecisionApplied(result.decision.model_copy(update={"item_id": page_item_id}))
    if isinstance(result, AlreadyDecided):
        return AlreadyDecided(result.decision.model_copy(update={"item_id": page_item_id}))
    return result


def _combined(statuses: Sequence[ResumeStatus]) -> ResumeStatus | None:
    """One status for the reviewer: a closed workflow is worth telling, then a deferred resume."""
    for status in (ResumeStatus.ALREADY_CLOSED, ResumeStatus.DEFERRED, ResumeStatus.RESUMED):
        if status in statuses:
            return status
    return None
