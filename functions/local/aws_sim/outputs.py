"""OUT written exactly like the local runtime: derived files copied from the work bucket into the local layout, one
manifest entry per input photo with its URIs rewritten to those files, and the output bucket's `approved/` and
`feedback/` brought home through the local publisher (so `published.jsonl` and the never-overwrite rule are the same).
"""

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import boto3
from pydantic import BaseModel

from functions.adapters.local.files import FileStorage, file_uri, path_of
from functions.adapters.local.publisher import FolderPublisher
from functions.errors import CatalogError
from functions.local.aws_sim.driver import Execution, FlowDriver, PrepareFailure, bucket_and_prefix
from functions.local.aws_sim.stack import REGION
from functions.local.discovery import InputPhoto
from functions.local.manifest import manifest_outputs
from functions.local.runner import REPORT_FILES, RunSettings, apply_results, failed_entry
from functions.ports import PublishStatus
from functions.stages.gpu_requests import jobs_for
from functions.stages.publish import safe_name
from schemas import JobRequest, JobResult, ManifestEntry, PreparedImage, ProcessingError, PublishResult, Status

Model = TypeVar("Model", bound=BaseModel)
# Failures that end the review, not the processing: the photo's entry stays succeeded, as in the local runtime.
REVIEW_ENDINGS = frozenset({"ReviewExpired", "ReviewTimedOut"})
_STABLE_CODE = re.compile(r"^([a-z][a-z0-9_]*): (.*)$", re.DOTALL)


class UriMap:
    """`s3://` prefixes -> local `file://` prefixes (or paths relative to INPUT), applied longest first."""

    def __init__(self) -> None:
        self.prefixes: dict[str, str] = {}

    def add(self, remote: str, local: str) -> None:
        self.prefixes[remote] = local

    def update(self, other: "UriMap") -> None:
        self.prefixes.update(other.prefixes)

    def rewrite(self, text: str, in_json: bool = False) -> str:
        if not self.prefixes:
            return text

        def escaped(value: str) -> str:
            return json.dumps(value, ensure_ascii=False)[1:-1] if in_json else value

        pairs = {escaped(remote): escaped(local) for remote, local in self.prefixes.items()}
        pattern = "|".join(re.escape(remote) for remote in sorted(pairs, key=len, reverse=True))
        return re.sub(pattern, lambda match: pairs[match.group(0)], text)

    def rewrite_model(self, model: Model) -> Model:
        return type(model).model_validate_json(self.rewrite(model.model_dump_json(), in_json=True))


class OutputWriter:
    """Builds each photo's manifest entry from what the flow left in the buckets, copying its files into OUT."""

    def __init__(
        self,
        out_dir: Path,
        settings: RunSettings,
        driver: FlowDriver,
        uploaded: dict[str, InputPhoto],
        intake_root: str,
        brands_uri: str,
    ) -> None:
        self.out_dir, self.settings, self.driver = out_dir, settings, driver
        self.uploaded, self.intake_root, self.brands_uri = uploaded, intake_root, brands_uri
        self.intake_bucket = bucket_and_prefix(intake_root)[0]
        self.key_of = {photo.source: key for key, photo in uploaded.items()}
        self.uris = UriMap()  # every entry's, for the feedback lines
        self.storage = FileStorage([out_dir])
        self.s3 = boto3.client("s3", region_name=REGION)

    # -- progress while the flow runs ------------------------------------------------------------------------------

    def progress_entry(self, key: str) -> ManifestEntry:
        """What the progress bar needs as soon as prepare is done: the photo and whether it failed."""
        return self._from_prepare(self.uploaded[key], key, with_files=False)

    def not_executed(self, photos: list[InputPhoto]) -> list[InputPhoto]:
        """Photos with no execution: not uploaded (unreadable) or dropped by ingest (zero bytes)."""
        executed = {execution.request.key for execution in self.driver.executions.values()}
        return [photo for photo in photos if self.key_of.get(photo.source) not in executed]

    # -- the entries -----------------------------------------------------------------------------------------------

    def entries(self, photos: list[InputPhoto]) -> list[ManifestEntry]:
        return [self.entry(photo) for photo in photos]

    def entry(self, photo: InputPhoto) -> ManifestEntry:
        key = self.key_of.get(photo.source)
        if key is None:
            return self._unreadable(photo)
        execution = next((e for e in self.driver.executions.values() if e.request.key == key), None)
        if execution is None:
            return self._dropped_by_ingest(photo)
        entry = self._from_prepare(photo, key, with_files=True)
        if entry.status is Status.SUCCEEDED and execution.status != "SUCCEEDED":
            entry = self._unless_review_ended(entry, photo, key, execution)
        return entry

    def _failed(self, photo: InputPhoto, error: ProcessingError, sha: str | None) -> ManifestEntry:
        return failed_entry(photo, self.settings, error, sha)

    def _unreadable(self, photo: InputPhoto) -> ManifestEntry:
        try:
            photo.path.read_bytes()
            reason = "it could not be uploaded"
        except OSError as error:
            reason = str(error)
        return self._failed(photo, ProcessingError(code="unreadable", message=f"{photo.source}: {reason}"), None)

    def _dropped_by_ingest(self, photo: InputPhoto) -> ManifestEntry:
        """Ingest acknowledges and drops zero-byte objects; the entry says what the local runtime says of them."""
        from functions.stages.intake import normalise_image

        data = photo.path.read_bytes()
        try:
            normalise_image(data, photo.source)
            error = ProcessingError(code="not_ingested", message=f"{photo.source}: intake dropped it without a reason.")
        except CatalogError as refused:
            error = ProcessingError(code=refused.code, message=refused.message)
        return self._failed(photo, error, hashlib.sha256(data).hexdigest())

    def _sha_of(self, photo: InputPhoto) -> str | None:
        if photo.sidecar_error:
            return None  # the local runtime fails these before reading the photo
        try:
            return hashlib.sha256(photo.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def _from_prepare(self, photo: InputPhoto, key: str, with_files: bool) -> ManifestEntry:
        failure = self.driver.prepare_failures.get(key)
        if failure is not None:
            return self._failed(photo, self._error_from(photo, key, failure), self._sha_of(photo))
        prepared = self.driver.prepared.get(key)
        if prepared is None:
            error = ProcessingError(code="internal_error", message=f"{photo.source}: the workflow never prepared it.")
            return self._failed(photo, error, self._sha_of(photo))
        uris = self._uri_map(photo, key, prepared)
        ran = [
            (job, self.driver.job_results[job.job_id]) for job in prepared.jobs if job.job_id in self.driver.job_results
        ]
        results = [result for _, result in ran]
        if with_files:
            self.uris.update(uris)
            self._copy_files(prepared, ran, uris)
        local = uris.rewrite_model(prepared)
        entry = ManifestEntry(
            source=photo.source,
            sku=photo.sku,
            status=Status.SUCCEEDED,
            content_sha256=local.content_sha256,
            settings_fingerprint=self.settings.fingerprint(),
            requested_jobs=jobs_for(photo.sidecar, self.settings.jobs),
            outputs=manifest_outputs(local, self.out_dir) if with_files else {},
            checks=local.checks,
            intake=local.intake,
            cutout=local.cutout,
            prepared=local,
        )
        entry = apply_results(entry, [uris.rewrite_model(result) for result in results])
        review = self.driver.checked.get(prepared.image_id)
        if entry.status is Status.SUCCEEDED and review is not None:
            entry = entry.model_copy(update={"review_items": tuple(uris.rewrite_model(i) for i in review.items)})
        return entry

    def _error_from(self, photo: InputPhoto, key: str, failure: PrepareFailure) -> ProcessingError:
        """The handler's `"<code>: s3://...: message"` as the local runtime reports it: the stable code and the
        stage's own message, any URI of the intake bucket named by its path under INPUT."""
        match = _STABLE_CODE.match(failure.message) if failure.error_type in _catalog_error_names() else None
        if match is None:  # not a CatalogError: a bug or a crash, reported like the local runtime's
            message = f"{photo.source}: processing stopped unexpectedly ({failure.error_type}: {failure.message})."
            return ProcessingError(code="internal_error", message=message)
        code, message = match.groups()
        source_uri = f"s3://{self.intake_bucket}/{key}"
        # The handler put the object first so that the execution's cause names it; the entry has its own source.
        message = message.removeprefix(f"{source_uri}: ")
        uris = UriMap()
        uris.add(source_uri, photo.source)
        uris.add(self.intake_root, "")
        return ProcessingError(code=code, message=uris.rewrite(message))

    def _unless_review_ended(
        self, entry: ManifestEntry, photo: InputPhoto, key: str, execution: Execution
    ) -> ManifestEntry:
        """A photo whose execution failed after prepare (not at the review, not in a GPU job) failed too."""
        error, cause = self.driver.failure_of(execution)
        if error in REVIEW_ENDINGS:
            return entry
        try:
            message = str(json.loads(cause).get("errorMessage") or cause)
        except (ValueError, AttributeError):
            message = cause
        reason = self._error_from(photo, key, PrepareFailure(error, message or error or execution.status))
        return entry.model_copy(update={"status": Status.FAILED, "error": reason, "review_items": ()})

    # -- files -----------------------------------------------------------------------------------------------------

    def _uri_map(self, photo: InputPhoto, key: str, prepared: PreparedImage) -> UriMap:
        stem = self.out_dir / prepared.publish_stem
        uris = UriMap()
        files = prepared.files
        uris.add(files.cutout.rsplit("/", 1)[0] + "/", file_uri(stem) + ".")
        if files.original_preview:
            previews = files.original_preview.rsplit(".", 2)[0] + "."
            uris.add(previews, file_uri(self.out_dir / REPORT_FILES / prepared.publish_stem) + ".")
        for job in prepared.jobs:
            local_prefix = f"{file_uri(stem)}.{job.kind.value}"
            uris.add(job.output_prefix, local_prefix)
            for attempt in range(10):
                uris.add(f"{job.output_prefix}/a{attempt}/", local_prefix + "/")
        uris.add(f"s3://{self.intake_bucket}/{key}", photo.source)
        uris.add(self.intake_root, "")
        profile_uri = self.settings.brand.resolved.profile_uri
        if profile_uri and profile_uri.startswith("file://"):
            brand = self.settings.brand.resolved.brand
            uris.add(f"{self.brands_uri.rstrip('/')}/{brand}/", file_uri(path_of(profile_uri).parent) + "/")
        return uris

    def _copy_files(self, prepared: PreparedImage, ran: Iterable[tuple[JobRequest, JobResult]], uris: UriMap) -> None:
        """Everything prepare wrote, and each job's last attempt's files, to where the local runtime writes them."""
        prefixes = [prepared.files.cutout.rsplit("/", 1)[0] + "/"]
        prefixes += [f"{job.output_prefix}/a{result.job_id.rpartition('-a')[2]}/" for job, result in ran]
        for prefix in prefixes:
            bucket, key_prefix = bucket_and_prefix(prefix)
            for key in _keys(self.s3, bucket, key_prefix):
                local = uris.rewrite(f"s3://{bucket}/{key}")
                if not local.startswith("file://"):
                    continue
                data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                if key.endswith(".json"):  # the jobs' result.json names its files: name the local ones
                    data = uris.rewrite(data.decode("utf-8"), in_json=True).encode("utf-8")
                self.storage.write_bytes(local, data)

    # -- published and feedback ------------------------------------------------------------------------------------

    def bring_home_published(
        self, output_bucket: str, approved_prefix: str, feedback_prefix: str, brand: str
    ) -> PublishResult:
        """`approved/<brand>/...` -> OUT/approved/..., `feedback/<brand>/*.jsonl` -> OUT/feedback/<brand>.jsonl."""
        publisher = FolderPublisher(self.out_dir)
        statuses: dict[PublishStatus, list[str]] = {status: [] for status in PublishStatus}
        prefix = f"{approved_prefix}{safe_name(brand)}/"
        for key in _keys(self.s3, output_bucket, prefix):
            found = self.s3.get_object(Bucket=output_bucket, Key=key)
            content_type = found.get("ContentType", "application/octet-stream")
            metadata = dict(found.get("Metadata") or {})  # the object's user metadata: the provenance
            status, location = publisher.publish(
                brand, key[len(prefix) :], found["Body"].read(), content_type, metadata
            )
            statuses[status].append(location)
        rejected: list[str] = []
        feedback = None
        prefix = f"{feedback_prefix}{safe_name(brand)}/"
        for key in _keys(self.s3, output_bucket, prefix):
            lines = self.uris.rewrite(self.s3.get_object(Bucket=output_bucket, Key=key)["Body"].read().decode(), True)
            rejected += [json.loads(line)["item_id"] for line in lines.splitlines() if line.strip()]
            _, feedback = publisher.record_feedback(brand, key[len(prefix) :].removesuffix(".jsonl"), lines.encode())
        return PublishResult(
            published=tuple(statuses[PublishStatus.PUBLISHED]),
            already_published=tuple(statuses[PublishStatus.ALREADY_PUBLISHED]),
            conflicts=tuple(statuses[PublishStatus.CONFLICT]),
            rejected=tuple(rejected),
            feedback=feedback,
        )


def _catalog_error_names() -> set[str]:
    """What Lambda reports as `errorType` for the per-file errors whose message starts with the stable code."""
    names, pending = set(), [CatalogError]
    while pending:
        kind = pending.pop()
        names.add(kind.__name__)
        pending += kind.__subclasses__()
    return names


def _keys(s3: object, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", ())]
    return sorted(keys)
