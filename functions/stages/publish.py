"""After review: approved images go to the published location, never over an existing object; rejected ones become
labelled lines of the brand's feedback dataset (JSON Lines), which the next training round reads.
"""

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from schemas.review import FeedbackRecord, ReviewDecision, ReviewItem, Verdict

from .store import StoredReview

APPROVED_DIR = "approved"
FEEDBACK_DIR = "feedback"


@dataclass
class PublishReport:
    published: list[str] = field(default_factory=list)
    already_published: list[str] = field(default_factory=list)  # same bytes were there: a re-run, nothing to do
    conflicts: list[str] = field(default_factory=list)  # different bytes were there: left alone, reported
    feedback: str | None = None
    feedback_records: int = 0


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
    )


def _decided(review: StoredReview, verdict: Verdict) -> list[tuple[ReviewItem, ReviewDecision]]:
    return [
        (item, review.decisions[item.item_id])
        for item in review.task.items
        if item.item_id in review.decisions and review.decisions[item.item_id].verdict is verdict
    ]


def _brand_file_name(brand: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", brand).strip("._") or "_"


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if root.resolve() not in target.parents:
        raise ValueError(f"{relative!r} is outside {root}")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _link_exclusive(source: Path, target: Path) -> None:
    """Copy `source` to `target` all at once, failing with FileExistsError if `target` exists (never overwrites)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as file, source.open("rb") as original:
            while block := original.read(1 << 20):
                file.write(block)
        # link() fails if the name exists, atomically: the O_EXCL guarantee without a half-written file on a crash.
        os.link(temporary, target)
    finally:
        os.unlink(temporary)


def publish_locally(out_dir: Path, review: StoredReview) -> PublishReport:
    """`OUT/approved/<SKU>/...` for approved items; `OUT/feedback/<brand>.jsonl` lines for rejected ones."""
    report = PublishReport()
    for item, _ in _decided(review, Verdict.APPROVED):
        source = _inside(out_dir, item.generated)
        target_relative = f"{APPROVED_DIR}/{item.generated}"
        target = _inside(out_dir, target_relative)
        try:
            _link_exclusive(source, target)
            report.published.append(target_relative)
        except FileExistsError:
            same = _sha256(target) == _sha256(source)
            (report.already_published if same else report.conflicts).append(target_relative)

    rejected = _decided(review, Verdict.REJECTED)
    if rejected:
        relative = f"{FEEDBACK_DIR}/{_brand_file_name(review.task.brand)}.jsonl"
        path = _inside(out_dir, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            feedback_record(review.review_id, review.task.brand, item, d).model_dump_json() + "\n"
            for item, d in rejected
        )
        # O_APPEND and one write: concurrent runs for the same brand never interleave inside a line.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        report.feedback, report.feedback_records = relative, len(rejected)
    return report


def _s3_location(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.lstrip("/"):
        raise ValueError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def publish_to_s3(
    s3: Any, review: StoredReview, bucket: str, approved_prefix: str, feedback_prefix: str
) -> PublishReport:
    """The AWS twin: `IfNoneMatch="*"` puts, so an existing published object is never replaced.

    Approved images go to `<approved_prefix><brand>/<sku>/<item id>.<ext>`, the publish handler's layout.
    Feedback is one JSON Lines object per batch (`<feedback_prefix><brand>/<review id>.jsonl`): S3 cannot append.
    """
    report = PublishReport()
    brand = _brand_file_name(review.task.brand)
    for item, _ in _decided(review, Verdict.APPROVED):
        source_bucket, source_key = _s3_location(item.generated)
        # Named after the item, as the publish handler does: every packshot is `packshot.jpg` in its own prefix,
        # so the source's file name would make a SKU's second photo collide with its first.
        file_name = source_key.rsplit("/", 1)[-1]
        extension = file_name.rsplit(".", 1)[-1] if "." in file_name else "png"
        target_key = (
            f"{approved_prefix}{brand}/{_brand_file_name(item.sku)}/{_brand_file_name(item.item_id)}.{extension}"
        )
        source = s3.get_object(Bucket=source_bucket, Key=source_key)
        content_type = source.get("ContentType") or "application/octet-stream"  # browsers need it to show the image
        status = put_once(s3, bucket, target_key, source["Body"].read(), content_type)
        if status == "published":
            report.published.append(f"s3://{bucket}/{target_key}")
        elif status == "already_published":
            report.already_published.append(f"s3://{bucket}/{target_key}")
        else:
            report.conflicts.append(f"s3://{bucket}/{target_key}")

    rejected = _decided(review, Verdict.REJECTED)
    if rejected:
        key = f"{feedback_prefix}{brand}/{_brand_file_name(review.review_id)}.jsonl"
        lines = "".join(
            feedback_record(review.review_id, review.task.brand, item, d).model_dump_json() + "\n"
            for item, d in rejected
        )
        if put_once(s3, bucket, key, lines.encode(), "application/x-ndjson") == "conflict":
            report.conflicts.append(f"s3://{bucket}/{key}")  # other lines for this batch are there: kept, reported
        else:
            report.feedback, report.feedback_records = f"s3://{bucket}/{key}", len(rejected)
    return report


def put_once(s3: Any, bucket: str, key: str, body: bytes, content_type: str) -> str:
    """'published', 'already_published' (same bytes were there) or 'conflict' (other bytes; left alone)."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
        return "published"
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
    existing = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return "already_published" if hashlib.sha256(existing).digest() == hashlib.sha256(body).digest() else "conflict"
