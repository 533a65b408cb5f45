"""The brand's feedback dataset, read back for the next training round.

`publish_decisions` appends each rejected generated image to `feedback/<brand>.jsonl` (`FeedbackRecord` lines) and
publishes approved ones under `approved/`, logged in `published.jsonl`. Here rejections become `FailureCase`s grouped
by reason (for the dataset report and the comparison), and approved generated images become candidates a user may opt
in to the next dataset.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from functions.errors import field_problems
from functions.ports import BlobStorage
from functions.stages.publish import safe_name
from schemas import FeedbackRecord, JobKind, RejectionReason, Verdict
from schemas.dataset import FailureCase

FEEDBACK_DIR = "feedback"  # as the publishers write it: OUT/feedback/<brand>.jsonl, or the bucket's feedback/ prefix
PUBLISHED_LOG = "published.jsonl"
APPROVED_DIR = "approved"


@dataclass(frozen=True)
class FeedbackRead:
    """The brand's rejections from one or more feedback files, and the lines that could not be read."""

    cases: tuple[FailureCase, ...]
    problems: tuple[str, ...]


def feedback_file(path: Path, brand: str) -> Path:
    """`--feedback` may name the JSON Lines file itself or a `catalog run` output folder holding it."""
    return path / FEEDBACK_DIR / f"{safe_name(brand)}.jsonl" if path.is_dir() else path


def parse_feedback(data: bytes, where: str, brand: str) -> FeedbackRead:
    """Rejections of `brand` in one feedback file; a bad line is reported by file and line number and skipped."""
    cases: list[FailureCase] = []
    problems: list[str] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = FeedbackRecord.model_validate_json(line)
        except ValidationError as error:
            problems.append(f"{where} line {number} is not a feedback record: {field_problems(error)}.")
            continue
        if record.brand != brand or record.verdict is not Verdict.REJECTED:
            continue
        cases.append(failure_case(record))
    return FeedbackRead(tuple(cases), tuple(problems))


def failure_case(record: FeedbackRecord) -> FailureCase:
    """One rejection, with what made it: the prompt (when the record has one), seed, adapter and model versions."""
    return FailureCase(
        reason=record.reason or RejectionReason.OTHER,
        review_id=record.review_id,
        item_id=record.item_id,
        sku=record.sku,
        job_kind=record.job_kind,
        generated=record.generated,
        note=record.note,
        prompt=record.prompt,  # None on lines written before prompts were recorded
        seed=record.seed,
        adapter=record.adapter,
        adapter_version=record.adapter_version,
        model_version=record.model_version,
        flags=record.flags,
    )


def read_feedback(storage: BlobStorage, uris: Iterable[str], brand: str) -> FeedbackRead:
    """The brand's rejections from several feedback files (local or S3 through the storage port), each once."""
    cases: dict[tuple[str, str], FailureCase] = {}
    problems: list[str] = []
    for uri in uris:
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError:
            problems.append(f"{uri}: no feedback recorded for brand {brand!r} there yet.")
            continue
        read = parse_feedback(data, uri, brand)
        problems.extend(read.problems)
        for case in read.cases:
            cases.setdefault((case.review_id, case.item_id), case)  # a re-run review is recorded once
    return FeedbackRead(tuple(cases.values()), tuple(problems))


def by_reason(cases: Iterable[FailureCase]) -> dict[RejectionReason, list[FailureCase]]:
    """The failure log: rejections grouped by reason, in the order the reasons are listed, most recent last."""
    groups: dict[RejectionReason, list[FailureCase]] = {reason: [] for reason in RejectionReason}
    for case in cases:
        groups[case.reason].append(case)
    return {reason: found for reason, found in groups.items() if found}


@dataclass(frozen=True)
class ApprovedImage:
    """A generated image a reviewer approved and the run published: a candidate for the next dataset (opt-in)."""

    path: Path
    source: str
    sku: str
    job_kind: str


def approved_generated(out_dir: Path) -> tuple[list[ApprovedImage], list[str]]:
    """The generated (not packshot) images `catalog run` published in `out_dir`, from its `published.jsonl`."""
    log = out_dir / PUBLISHED_LOG
    if not log.is_file():
        return [], [f"{out_dir} has no {PUBLISHED_LOG}: nothing approved there to include."]
    found: list[ApprovedImage] = []
    problems: list[str] = []
    root = out_dir.resolve()
    for number, line in enumerate(log.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            relative = str(entry["path"])
            metadata = dict(entry.get("metadata") or {})
        except (ValueError, KeyError, TypeError):
            problems.append(f"{log} line {number} is not a published-file record.")
            continue
        kind = str(metadata.get("job-kind", ""))
        if kind == JobKind.PACKSHOT.value or not kind:
            continue  # a packshot is the photo itself on a backdrop, not a generated image
        path = (root / relative).resolve()
        if root not in path.parents or PurePosixPath(relative).parts[:1] != (APPROVED_DIR,):
            problems.append(f"{log} line {number} names {relative!r}, outside {out_dir}/{APPROVED_DIR}.")
            continue
        if not path.is_file():
            problems.append(f"{log} line {number}: {relative} is no longer there.")
            continue
        sku = str(metadata.get("sku") or path.parent.name)
        found.append(ApprovedImage(path, f"{out_dir.name}/{relative}", sku, kind))
    return found, problems
