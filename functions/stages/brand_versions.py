"""The brand store's versions and promotions, over the storage port (a folder locally, an S3 prefix on AWS).

    <brands>/<brand>/versions/<name>@v<N>/   adapter files, training.json, validation/..., dataset.json, then
                                             version.json LAST: the completeness marker; no marker, no version
    <brands>/<brand>/promotions/<seq>.json   append-only; the latest record names the active version

Nothing here is overwritten or deleted: every write is create-only (a hard link locally, `IfNoneMatch="*"` on S3).
A registration first claims its folder (`.claim.json`, naming its run); a re-run of the same training finishes its
own claimed folder or finds its finished version, so a run killed halfway never leaves a second copy.

The promotion gate (quality must not regress) is a seam: `promote(..., gate=...)` asks it and records its verdict;
a failed gate refuses unless a `force_reason` is given, which is recorded too.
"""

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from functions.ports import BlobStorage
from schemas.brand import AdapterRef, BrandProfile
from schemas.brand_versions import BrandVersion, PromotionAction, PromotionRecord

VERSION_MARKER = "version.json"
CLAIM = ".claim.json"
_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_\-]{0,47})@v(?P<number>[1-9][0-9]{0,5})$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,47}$")


class VersionStorage(BlobStorage, Protocol):
    """The storage port plus listing and create-only writes (FileStorage and S3Storage both have them)."""

    def write_new(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> bool: ...

    def list_uris(self, prefix_uri: str) -> list[str]: ...


class BrandStoreError(Exception):
    """A brand-store operation refused, with the reason a user can act on."""


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: tuple[str, ...]  # one line per regressed metric
    report_uri: str | None  # the comparison report, kept with the version


PromotionGate = Callable[[str, str | None], GateVerdict]  # (candidate "ss27@v4", active or None) -> verdict


def brand_uri(brands_uri: str, brand: str) -> str:
    return f"{brands_uri.rstrip('/')}/{brand}"


def version_uri(brands_uri: str, brand: str, ref: str) -> str:
    """The folder of `ref` (`name@vN`) in the brand store."""
    return f"{brand_uri(brands_uri, brand)}/versions/{ref}"


def parse_ref(ref: str) -> tuple[str, int]:
    """`ss27@v3` -> ("ss27", 3); anything else is a BrandStoreError saying the form."""
    match = _REF.match(ref)
    if match is None:
        raise BrandStoreError(f"{ref!r} is not a version: expected <name>@v<N>, e.g. ss27@v3")
    return match["name"], int(match["number"])


def _folders(storage: VersionStorage, brands_uri: str, brand: str) -> dict[str, set[str]]:
    """`name@vN` -> the file names in that version folder (finished or not)."""
    base = f"{brand_uri(brands_uri, brand)}/versions"
    folders: dict[str, set[str]] = {}
    for uri in storage.list_uris(base):
        ref, _, file_name = uri[len(base) + 1 :].partition("/")
        if _REF.match(ref) and file_name:
            folders.setdefault(ref, set()).add(file_name)
    return folders


def read_version(storage: BlobStorage, brands_uri: str, brand: str, ref: str) -> BrandVersion:
    """A finished version's record; BrandStoreError when it is not registered (or was never finished)."""
    parse_ref(ref)
    uri = f"{version_uri(brands_uri, brand, ref)}/{VERSION_MARKER}"
    try:
        return BrandVersion.model_validate_json(storage.read_bytes(uri))
    except FileNotFoundError as error:
        raise BrandStoreError(f"{brand} has no version {ref} (no {uri})") from error
    except ValidationError as error:
        raise BrandStoreError(f"{uri} is not a valid version record: {error.errors()[0]['msg']}") from error


def list_versions(storage: VersionStorage, brands_uri: str, brand: str) -> list[BrandVersion]:
    """The brand's finished versions, by name then number; folders without `version.json` are not versions."""
    finished = [ref for ref, files in _folders(storage, brands_uri, brand).items() if VERSION_MARKER in files]
    versions = [read_version(storage, brands_uri, brand, ref) for ref in finished]
    return sorted(versions, key=lambda version: (version.name, version.number))


def _claim_of(storage: BlobStorage, folder_uri: str) -> str | None:
    try:
        return str(json.loads(storage.read_bytes(f"{folder_uri}/{CLAIM}")).get("run_key"))
    except (FileNotFoundError, ValueError, AttributeError):
        return None


def version_for_run(
    storage: VersionStorage, brands_uri: str, brand: str, name: str, run_key: str
) -> BrandVersion | None:
    """The finished version this run (`run_key`) registered, if any."""
    folders = _folders(storage, brands_uri, brand)
    for ref, files in folders.items():
        if parse_ref(ref)[0] != name or VERSION_MARKER not in files:
            continue
        if _claim_of(storage, version_uri(brands_uri, brand, ref)) == run_key:
            return read_version(storage, brands_uri, brand, ref)
    return None


def _put_once(storage: VersionStorage, uri: str, data: bytes, content_type: str) -> None:
    """Create `uri`; a file already there must be these bytes (a resumed registration), else it is a conflict."""
    if storage.write_new(uri, data, content_type):
        return
    if hashlib.sha256(storage.read_bytes(uri)).digest() != hashlib.sha256(data).digest():
        raise BrandStoreError(f"{uri} already exists with other content: left as it is")


def register_version(
    storage: VersionStorage,
    brands_uri: str,
    brand: str,
    name: str,
    files: Mapping[str, bytes],
    *,
    run_key: str,
    source: str,
    embeddings_file: str | None = None,
    trigger_token: str | None = None,
    dataset_sha256: str | None = None,
    base_model: str | None = None,
    steps: int | None = None,
    now: datetime | None = None,
) -> BrandVersion:
    """Store `files` as the next free `name@vN` and write `version.json` last; idempotent for one `run_key`.

    A re-run with the same `run_key` returns the version it already registered, or finishes the folder it
    claimed before it was interrupted. N is never reused: a folder someone else claimed is skipped.
    """
    if not _NAME.match(name):
        raise BrandStoreError(f"version name {name!r}: lower-case letters, digits, '-' and '_' (at most 48)")
    adapter = BrandVersion.model_fields["adapter_file"].default
    if adapter not in files:
        raise BrandStoreError(f"a version needs {adapter}; got {sorted(files)}")
    for file_name in files:
        if file_name in (VERSION_MARKER, CLAIM) or file_name.startswith("/") or ".." in file_name.split("/"):
            raise BrandStoreError(f"{file_name!r} cannot be a file of a version")
    folders = _folders(storage, brands_uri, brand)
    mine: str | None = None
    for ref in sorted(folders, key=lambda item: parse_ref(item)[1]):
        if parse_ref(ref)[0] != name or _claim_of(storage, version_uri(brands_uri, brand, ref)) != run_key:
            continue
        if VERSION_MARKER in folders[ref]:
            return read_version(storage, brands_uri, brand, ref)
        mine = ref
    number = max((parse_ref(ref)[1] for ref in folders if parse_ref(ref)[0] == name), default=0)
    claim = json.dumps({"run_key": run_key, "source": source}).encode()
    while mine is None:
        number += 1
        candidate = f"{name}@v{number}"
        if storage.write_new(f"{version_uri(brands_uri, brand, candidate)}/{CLAIM}", claim, "application/json"):
            mine = candidate
    folder = version_uri(brands_uri, brand, mine)
    for file_name, data in sorted(files.items()):
        _put_once(storage, f"{folder}/{file_name}", data, _content_type(file_name))
    _, number = parse_ref(mine)
    version = BrandVersion(
        brand=brand,
        name=name,
        number=number,
        ref=mine,
        created_at=now or datetime.now(UTC),
        run_key=run_key,
        source=source,
        files={file_name: hashlib.sha256(data).hexdigest() for file_name, data in files.items()},
        adapter_file=adapter,
        embeddings_file=embeddings_file if embeddings_file in files else None,
        trigger_token=trigger_token,
        dataset_sha256=dataset_sha256,
        base_model=base_model,
        steps=steps,
    )
    _put_once(storage, f"{folder}/{VERSION_MARKER}", version.model_dump_json(indent=2).encode(), "application/json")
    return version


def _content_type(file_name: str) -> str:
    suffix = file_name.rsplit(".", 1)[-1].lower()
    return {"json": "application/json", "png": "image/png", "jpg": "image/jpeg", "html": "text/html"}.get(
        suffix, "application/octet-stream"
    )


# ---- promotions ---------------------------------------------------------------------------------------
def _promotions_uri(brands_uri: str, brand: str) -> str:
    return f"{brand_uri(brands_uri, brand)}/promotions"


def _records(storage: VersionStorage, brands_uri: str, brand: str) -> list[str]:
    base = _promotions_uri(brands_uri, brand)
    return sorted(uri for uri in storage.list_uris(base) if re.fullmatch(r"\d{6}\.json", uri[len(base) + 1 :]))


def promotion_log(storage: VersionStorage, brands_uri: str, brand: str) -> list[PromotionRecord]:
    """Every promotion and rollback, oldest first."""
    return [
        PromotionRecord.model_validate_json(storage.read_bytes(uri)) for uri in _records(storage, brands_uri, brand)
    ]


def latest_promotion(storage: VersionStorage, brands_uri: str, brand: str) -> PromotionRecord | None:
    records = _records(storage, brands_uri, brand)
    return PromotionRecord.model_validate_json(storage.read_bytes(records[-1])) if records else None


def active_version(storage: VersionStorage, brands_uri: str, brand: str) -> BrandVersion | None:
    """The version the latest promotion record names, or None when the brand never promoted one."""
    latest = latest_promotion(storage, brands_uri, brand)
    return None if latest is None else read_version(storage, brands_uri, brand, latest.version)


def _append(storage: VersionStorage, brands_uri: str, record: PromotionRecord) -> PromotionRecord:
    uri = f"{_promotions_uri(brands_uri, record.brand)}/{record.seq:06d}.json"
    if not storage.write_new(uri, record.model_dump_json(indent=2).encode(), "application/json"):
        raise BrandStoreError(f"{record.brand} changed its active version at the same time ({uri}): try again")
    return record


def promote(
    storage: VersionStorage,
    brands_uri: str,
    brand: str,
    ref: str,
    *,
    gate: PromotionGate | None,
    force_reason: str | None,
    actor: str,
    now: datetime | None = None,
) -> PromotionRecord:
    """Make `ref` the brand's active version, asking `gate` first; a failed gate refuses unless forced with a reason."""
    if force_reason is not None and not force_reason.strip():
        raise BrandStoreError("a forced promotion needs a reason (--reason TEXT)")
    read_version(storage, brands_uri, brand, ref)  # only a finished version can be promoted
    latest = latest_promotion(storage, brands_uri, brand)
    active = latest.version if latest is not None else None
    if active == ref:
        raise BrandStoreError(f"{ref} is already {brand}'s active version")
    verdict = gate(ref, active) if gate is not None else None
    if verdict is not None and not verdict.passed and force_reason is None:
        lines = "; ".join(verdict.reasons) or "the gate gave no reason"
        report = f" (report: {verdict.report_uri})" if verdict.report_uri else ""
        raise BrandStoreError(f"{ref} did not pass the promotion gate against {active}: {lines}{report}")
    stack = (*(latest.stack if latest is not None else ()), ref)
    record = PromotionRecord(
        seq=(latest.seq if latest is not None else 0) + 1,
        brand=brand,
        action=PromotionAction.PROMOTE,
        version=ref,
        previous=active,
        stack=stack,
        at=now or datetime.now(UTC),
        actor=actor,
        forced_reason=force_reason,
        gate_passed=None if verdict is None else verdict.passed,
        gate_reasons=() if verdict is None else verdict.reasons,
        gate_report_uri=None if verdict is None else verdict.report_uri,
    )
    return _append(storage, brands_uri, record)


def rollback(
    storage: VersionStorage, brands_uri: str, brand: str, *, actor: str, now: datetime | None = None
) -> PromotionRecord:
    """Return to the version that was active before the current one (a new record; the log keeps both)."""
    latest = latest_promotion(storage, brands_uri, brand)
    if latest is None:
        raise BrandStoreError(f"{brand} has no active version to roll back")
    if len(latest.stack) < 2:
        raise BrandStoreError(f"{brand} has no earlier active version than {latest.version} to return to")
    stack = latest.stack[:-1]
    read_version(storage, brands_uri, brand, stack[-1])
    record = PromotionRecord(
        seq=latest.seq + 1,
        brand=brand,
        action=PromotionAction.ROLLBACK,
        version=stack[-1],
        previous=latest.version,
        stack=stack,
        at=now or datetime.now(UTC),
        actor=actor,
    )
    return _append(storage, brands_uri, record)


# ---- the active version in a profile --------------------------------------------------------------------
def with_active_version(profile: BrandProfile, version: BrandVersion, brands_uri: str) -> BrandProfile:
    """The profile with the active version as its adapter of that name (added, or replacing a same-named one).

    The weight of a same-named adapter in the profile is kept; the version's trigger token wins, since pivotal
    tuning's embeddings are bound to it.
    """
    folder = version_uri(brands_uri, profile.brand, version.ref)
    existing = {adapter.name: adapter for adapter in profile.adapters}
    weight = existing[version.name].weight if version.name in existing else 1.0
    ref = AdapterRef(
        name=version.name,
        uri=f"{folder}/{version.adapter_file}",
        weight=weight,
        version=version.ref,
        embeddings_uri=f"{folder}/{version.embeddings_file}" if version.embeddings_file else None,
        embeddings_token=version.trigger_token if version.embeddings_file else None,
    )
    adapters = tuple(ref if adapter.name == version.name else adapter for adapter in profile.adapters)
    if version.name not in existing:
        adapters = (*adapters, ref)
    token = version.trigger_token or profile.trigger_token
    return profile.model_copy(update={"adapters": adapters, "trigger_token": token})
