"""`catalog run --review`: ask a person (or, with `auto`, nobody) before anything is published.

`none` publishes nothing. `auto` approves everything and records that no person reviewed it. `local` writes one
email to `OUT/outbox/`, serves the review page on 127.0.0.1, waits for every decision (or the timeout, after which
the batch ends `expired`), then publishes what was approved and records what was rejected.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from functions.adapters.local.files import FileStorage
from functions.adapters.local.outbox import OutboxMailer
from functions.adapters.local.publisher import FolderPublisher
from functions.adapters.local.resume import LocalResumer
from functions.adapters.local.review_server import LocalReviewServer
from functions.adapters.local.review_store import SQLiteReviewStore
from functions.local.publishing import PublishingOptions
from functions.review.mailer import build_review_email
from functions.review.service import AUTO_REVIEWER, ReviewService
from functions.review.signing import LinkParams, load_local_keys
from functions.review.store import StoredReview, now_utc
from functions.stages.publish import publish_decisions
from schemas import PublishResult, RunManifest, Status
from schemas.publishing import ShopifyMediaStatus, ShopifyPublishResult
from schemas.review import (
    ReviewItem,
    ReviewState,
    ReviewTask,
    Verdict,
)

DEFAULT_REVIEWER = "reviewer@example.com"
DEFAULT_TIMEOUT = timedelta(minutes=30)
LOCAL_SENDER = "catalog-review@localhost"
STATE_DIR = ".review"
OUTBOX_DIR = "outbox"
_POLL_SECONDS = 0.25


class ReviewMode(StrEnum):
    NONE = "none"
    AUTO = "auto"
    LOCAL = "local"


@dataclass(frozen=True)
class ReviewOptions:
    """How a run is reviewed: `--review`, `--reviewer`, `--review-timeout`, `--review-port`."""

    mode: ReviewMode = ReviewMode.NONE
    reviewer: str = DEFAULT_REVIEWER
    timeout: timedelta = DEFAULT_TIMEOUT
    port: int = 0
    publishing: PublishingOptions = field(default_factory=PublishingOptions)  # profile, C2PA signing, a store


@dataclass(frozen=True)
class ReviewRunResult:
    mode: ReviewMode
    state: ReviewState | None = None
    review_id: str | None = None
    link: str | None = None
    email: str | None = None
    approved: int = 0
    rejected: int = 0
    pending: int = 0
    publish: PublishResult | None = None
    shopify: ShopifyPublishResult | None = None

    def summary(self) -> str:
        """One paragraph for the terminal."""
        if self.mode is ReviewMode.NONE:
            return "Review: off (--review none); nothing was published. Use --review local to review and publish."
        if self.state is None:
            return "Review: nothing to review (no packshot succeeded); nothing was published."
        who = " automatically (no person reviewed)" if self.mode is ReviewMode.AUTO else ""
        lines = [
            f"Review {self.review_id} {self.state.value}{who}: {self.approved} approved, {self.rejected} rejected, "
            f"{self.pending} not decided."
        ]
        if self.state is ReviewState.EXPIRED:
            lines.append("The review timed out; run `catalog review reissue OUT` to ask again for the undecided ones.")
        if self.publish:
            lines.append(
                f"Published {len(self.publish.published)} file(s) under approved/"
                + (f", {len(self.publish.already_published)} already there" if self.publish.already_published else "")
                + "."
            )
            if self.publish.conflicts:
                lines.append(f"Not overwritten (a different file exists): {', '.join(self.publish.conflicts)}.")
            if self.publish.feedback:
                lines.append(f"Recorded {self.publish.rejected_count} rejection(s) in {self.publish.feedback}.")
        if self.shopify:
            counts = ", ".join(
                f"{self.shopify.count(s)} {s.value}" for s in ShopifyMediaStatus if self.shopify.count(s)
            )
            lines.append(f"Shopify {self.shopify.shop}: {counts or 'nothing to publish'} (shopify/published.jsonl).")
        return "\n".join(lines)


def items_from_manifest(manifest: RunManifest) -> list[ReviewItem]:
    """The review items the checks stage made for each succeeded photo: its packshot and generated images."""
    return [item for entry in manifest.entries if entry.status is Status.SUCCEEDED for item in entry.review_items]


def local_service(out_dir: Path, clock: Callable[[], datetime] = now_utc) -> tuple[ReviewService, LocalResumer]:
    """The local store (`OUT/.review/reviews.sqlite`) and key file (`OUT/.review/keys.json`, mode 0600), in a folder
    only the owner can enter (0700): both hold what a link needs."""
    state = out_dir / STATE_DIR
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state, 0o700)  # also a folder an older version created 0755
    resumer = LocalResumer()
    store = SQLiteReviewStore(state / "reviews.sqlite")
    return ReviewService(store, load_local_keys(state / "keys.json"), resumer, clock), resumer


def _result(
    mode: ReviewMode,
    review: StoredReview,
    out_dir: Path,
    link: str | None,
    email: str | None,
    publishing: PublishingOptions | None = None,
) -> ReviewRunResult:
    publishing = publishing or PublishingOptions()
    read_bytes = FileStorage([out_dir]).read_bytes
    report = publish_decisions(
        review.task.brand,
        review.review_id,
        review.task.items,
        review.decisions.values(),
        read_bytes=read_bytes,
        publisher=FolderPublisher(out_dir),
        c2pa_signing=publishing.c2pa_signing,
    )
    shopify = None
    if publishing.shopify is not None:  # after approved/ is written: that copy stays whatever the store answers
        from functions.local.shopify_publish import publish_to_store

        shopify = publish_to_store(out_dir, review, read_bytes, publishing)
    approved = sum(d.verdict is Verdict.APPROVED for d in review.decisions.values())
    return ReviewRunResult(
        mode=mode,
        state=review.state,
        review_id=review.review_id,
        link=link,
        email=email,
        approved=approved,
        rejected=len(review.decisions) - approved,
        pending=len(review.pending_items),
        publish=report,
        shopify=shopify,
    )


def serve_and_wait(
    service: ReviewService,
    resumer: LocalResumer,
    task: ReviewTask,
    params: LinkParams,
    out_dir: Path,
    port: int = 0,
    on_link: Callable[[str, str], None] = lambda link, email: None,
    publishing: PublishingOptions | None = None,
) -> ReviewRunResult:
    """Email the link, serve the page until every item is decided or the link expires, then publish."""
    try:
        server = LocalReviewServer(service, out_dir, port)
    except OSError as error:
        service.expire(task.review_id)
        raise ValueError(f"cannot serve the review page on 127.0.0.1:{port}: {error.strerror}") from error
    with server:
        link = server.link(params)
        # Thumbnails carry an image-only capability: a mail proxy that fetches them can neither open nor decide.
        message = build_review_email(task, link, lambda item: server.thumbnail_url(params, item), LOCAL_SENDER)
        email = OutboxMailer(out_dir / OUTBOX_DIR).send(message)
        on_link(link, email)
        try:
            while not resumer.finished.is_set() and service.clock() < task.expires_at:
                resumer.finished.wait(_POLL_SECONDS)
        finally:
            # Timed out or interrupted: end the batch so no late click lands after we publish.
            service.expire(task.review_id)
    review = service.store.get(task.review_id)
    assert review is not None
    return _result(ReviewMode.LOCAL, review, out_dir, link, email, publishing)


def review_run(
    out_dir: Path,
    manifest: RunManifest,
    mode: ReviewMode,
    *,
    reviewer: str = DEFAULT_REVIEWER,
    timeout: timedelta = DEFAULT_TIMEOUT,
    port: int = 0,
    on_link: Callable[[str, str], None] = lambda link, email: None,
    clock: Callable[[], datetime] = now_utc,
    publishing: PublishingOptions | None = None,
) -> ReviewRunResult:
    """Review a run's outputs: every succeeded photo's packshot and generated images, in one batch."""
    # 1. What is there to review?
    if mode is ReviewMode.NONE:
        return ReviewRunResult(mode)
    items = items_from_manifest(manifest)
    if not items:
        return ReviewRunResult(mode)

    # 2. One batch for the run.
    service, resumer = local_service(out_dir, clock)
    task, params = service.create(manifest.options.brand, [reviewer], items, timeout)

    # 3. Decide: nobody (auto) or a person through the local page.
    if mode is ReviewMode.AUTO:
        outcome = service.approve_everything(task.review_id, AUTO_REVIEWER)
        return _result(mode, outcome.review, out_dir, None, None, publishing)
    return serve_and_wait(service, resumer, task, params, out_dir, port, on_link, publishing)
