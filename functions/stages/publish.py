"""After review: approved images go to the published location, never over an existing object; rejected ones become
labelled lines of the brand's feedback dataset (JSON Lines), which the next training round reads.

One stage for both runtimes: the publisher port is a folder locally (`OUT/approved/`, `OUT/feedback/`) and the
output bucket on AWS. Each published image carries its provenance (what made it, with which adapters and seed): as
metadata beside it, and inside the file as the IPTC Digital Source Type in XMP (and a signed C2PA manifest when the
deployment has a signing certificate), see `functions/stages/provenance.py`.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePosixPath

from functions.ports import Publisher, PublishStatus
from functions.stages.provenance import C2paSigning, can_carry_provenance, mark_image
from schemas import FeedbackRecord, PublishResult, ReviewDecision, ReviewItem, Verdict

ReadBytes = Callable[[str], bytes]

_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def safe_name(text: str) -> str:
    """A file-name and S3-key safe form of a SKU, file stem or brand (merchandisers may type anything)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "_"


def feedback_record(review_id: str, brand: str, item: ReviewItem, decision: ReviewDecision) -> FeedbackRecord:
    """One rejected (or decided) image as a line of the brand's feedback dataset."""
    provenance = item.details.provenance
    return FeedbackRecord(
        review_id=review_id,
        item_id=item.item_id,
        brand=brand,
        sku=item.sku,
        job_kind=item.job_kind,
        source=item.details.source,
        content_sha256=item.details.content_sha256,
        generated=item.generated,
        verdict=decision.verdict,
        reason=decision.reason,
        note=decision.note,
        reviewer=decision.reviewer,
        decided_at=decision.decided_at,
        flags=tuple(flag.code for flag in item.flags),
        engine=provenance.engine,
        model=provenance.model,
        model_version=provenance.model_version,
        adapter=provenance.adapter,
        adapter_version=provenance.adapter_version,
        seed=provenance.seed,
        prompt=provenance.prompt,
    )


def published_metadata(item: ReviewItem, decision: ReviewDecision, review_id: str) -> dict[str, str]:
    """What travels with a published image (S3 user metadata; `published.jsonl` locally): ASCII values only."""
    provenance = item.details.provenance
    values = {
        "job-kind": item.job_kind,
        "sku": item.sku,
        "source-sha256": item.details.content_sha256,
        "engine": provenance.engine,
        "model-version": provenance.model_version,
        "adapter": provenance.adapter,
        "adapter-version": provenance.adapter_version,
        "seed": None if provenance.seed is None else str(provenance.seed),
        "review-id": review_id,
        "approved-by": decision.reviewer,
    }
    return {key: value.encode("ascii", "replace").decode() for key, value in values.items() if value is not None}


def publish_name(item: ReviewItem) -> str:
    """`<sku>/<photo>.<kind>...`: the item's own name, or one made from its SKU and id when it has none."""
    name = item.details.publish_name
    if name is None:
        suffix = PurePosixPath(item.generated).suffix or ".png"
        name = f"{item.sku}/{item.item_id}{suffix}"
    parts = [safe_name(part) for part in PurePosixPath(name).parts]
    return "/".join(parts)


def published_bytes(
    item: ReviewItem, decision: ReviewDecision, data: bytes, content_type: str, c2pa_signing: C2paSigning | None
) -> bytes:
    """The approved image as published: provenance marked in the file. Bytes that are no JPEG, PNG or WebP (nothing
    this pipeline encodes) have no place for it and go as they are."""
    if not can_carry_provenance(data):
        return data
    provenance = {k: v for k, v in published_metadata(item, decision, "").items() if k not in ("review-id", "sku")}
    approval = {"approved-by": decision.reviewer, "decided-at": decision.decided_at.isoformat()}
    return mark_image(
        data,
        content_type,
        item.job_kind,
        provenance,
        approval=approval,
        title=publish_name(item),
        c2pa_signing=c2pa_signing,
    )


def _decided(
    items: Sequence[ReviewItem], decisions: Iterable[ReviewDecision]
) -> list[tuple[ReviewItem, ReviewDecision]]:
    by_id = {item.item_id: item for item in items}
    pairs = []
    for decision in decisions:
        item = by_id.get(decision.item_id)
        if item is None:
            raise ValueError(f"decision for item {decision.item_id!r}, which is not part of this review")
        pairs.append((item, decision))
    return pairs


def publish_decisions(
    brand: str,
    review_id: str,
    items: Sequence[ReviewItem],
    decisions: Iterable[ReviewDecision],
    *,
    read_bytes: ReadBytes,
    publisher: Publisher,
    c2pa_signing: C2paSigning | None = None,
) -> PublishResult:
    """Approved -> marked with their provenance -> the publisher (never over other bytes); rejected -> one feedback
    write for the batch."""
    published: dict[PublishStatus, list[str]] = {status: [] for status in PublishStatus}
    rejected: list[tuple[ReviewItem, ReviewDecision]] = []
    for item, decision in _decided(items, decisions):
        if decision.verdict is not Verdict.APPROVED:
            rejected.append((item, decision))
            continue
        name = publish_name(item)
        content_type = _CONTENT_TYPES.get(PurePosixPath(name).suffix.lower(), "application/octet-stream")
        data = published_bytes(item, decision, read_bytes(item.generated), content_type, c2pa_signing)
        status, location = publisher.publish(
            brand, name, data, content_type, published_metadata(item, decision, review_id)
        )
        published[status].append(location)

    feedback = None
    if rejected:
        lines = "".join(feedback_record(review_id, brand, i, d).model_dump_json() + "\n" for i, d in rejected)
        status, location = publisher.record_feedback(brand, review_id, lines.encode())
        if status is PublishStatus.CONFLICT:  # other lines are already there for this batch: kept, reported
            published[PublishStatus.CONFLICT].append(location)
        else:
            feedback = location
    return PublishResult(
        published=tuple(published[PublishStatus.PUBLISHED]),
        already_published=tuple(published[PublishStatus.ALREADY_PUBLISHED]),
        conflicts=tuple(published[PublishStatus.CONFLICT]),
        rejected=tuple(item.item_id for item, _ in rejected),
        feedback=feedback,
    )
