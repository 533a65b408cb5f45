"""`catalog run` on one machine: find the photos, process them on every core, write outputs, manifest, report.

Originals are only ever read. Every output lands under the output folder, written atomically, so an interrupted
run never leaves a half-written file that a re-run would take for finished work. The manifest is written as the run
goes (after each photo's files and each GPU job's, never before them), so a run killed at any moment is resumed by
the same command: what is finished and on disk is reused, the rest (a GPU job included) runs, once.
"""

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Protocol

from functions.adapters.local.files import FileStorage, file_uri, path_of
from functions.allocator import keep_image_buffers
from functions.blas_threads import one_blas_thread
from functions.errors import CatalogError, ConfigurationError
from functions.local.discovery import InputPhoto
from functions.local.entry_spool import EntrySpool, PreviousEntries, close_spooled
from functions.local.manifest import (
    MANIFEST_NAME,
    ManifestEntriesOnDisk,
    load_previous_manifest,
    manifest_outputs,
    remove_interrupted_writes,
    remove_stale_outputs,
    write_manifest_entries,
)
from functions.ports import GpuJobRunner
from functions.review.local_flow import DEFAULT_REVIEWER, ReviewOptions, ReviewRunResult, review_run
from functions.stages.background import BackgroundRemover, background_remover_from_spec
from functions.stages.brand import BrandSelection
from functions.stages.gpu_requests import jobs_for, sidecar_with_category
from functions.stages.intake import IntakeLimits
from functions.stages.packshot import PackshotPreset, PackshotSettings
from functions.stages.prepare import PhotoToPrepare, PrepareTargets, prepare_image
from functions.stages.review_items import image_reader, review_items
from schemas import (
    GarmentCategory,
    JobKind,
    JobRequest,
    JobResult,
    ManifestEntry,
    ProcessingError,
    ResolvedBrand,
    RunManifest,
    RunOptions,
    Status,
)

REPORT_NAME = "report.html"
REPORT_FILES = "report_files"
DEFAULT_BRAND = "default"
NO_BRAND = BrandSelection(
    ResolvedBrand(brand=DEFAULT_BRAND, note="No --brand given: packshot defaults, GPU jobs without brand adapters."),
    None,
)


@cache
def tool_version() -> str:
    """The installed tool's version, read once a process: reading the package metadata took ~4 ms, and every photo's
    entry carries the settings fingerprint that holds it."""
    try:
        return version("catalog-image-processor")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


@dataclass(frozen=True)
class RunSettings:
    """Everything that shapes a run's outputs (and `workers`, which does not)."""

    background: str = "backdrop"
    preset: str = "white-square"
    size: int = 2000
    fill_ratio: float = 0.85
    output_format: str | None = None
    quality: int = 92
    models_dir: Path | None = None
    allow_download: bool = False
    commercial: bool = True
    limits: IntakeLimits = field(default_factory=IntakeLimits)
    workers: int = 1
    force: bool = False
    jobs: tuple[JobKind, ...] = (JobKind.PACKSHOT,)  # default per photo; a sidecar's `jobs` wins for its SKU
    models: str | None = None  # `tiny` or a model config file; needed only for GPU jobs
    category: GarmentCategory | None = None  # for photos whose sidecar names none; a sidecar's category wins
    brand: BrandSelection = NO_BRAND
    reviewers: tuple[str, ...] = (DEFAULT_REVIEWER,)
    max_pixel_difference: int = 2  # the checks' tolerance for "kept pixels are unchanged"

    def packshot_settings(self) -> PackshotSettings:
        return PackshotSettings(
            preset=PackshotPreset(self.preset),
            size=self.size,
            fill_ratio=self.fill_ratio,
            output_format=self.output_format,  # type: ignore[arg-type]
            quality=self.quality,
        )

    def run_options(self) -> RunOptions:
        return RunOptions(
            background=self.background,
            preset=self.preset,
            size=self.size,
            fill_ratio=self.fill_ratio,
            output_format=self.packshot_settings().resolved_format,
            quality=self.quality,
            jobs=self.jobs,
            models=self.models,
            brand=self.brand.resolved.brand,
        )

    def fingerprint(self) -> str:
        """Hash of what decides the output bytes; a change re-processes every photo."""
        shaping = {
            "tool": tool_version(),
            "options": self.run_options().model_dump(mode="json"),
            "limits": asdict(self.limits),
            "brand": self.brand.resolved.model_dump(mode="json"),
            "brand_profile": self.brand.profile.model_dump(mode="json") if self.brand.profile else None,
            "reviewers": self.reviewers,
        }
        if self.category is not None:  # only when given, so runs without --category keep their fingerprint
            shaping["category"] = self.category.value
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


# -- one photo ----------------------------------------------------------------------------------------------------


def failed_entry(photo: InputPhoto, settings: RunSettings, error: ProcessingError, sha: str | None) -> ManifestEntry:
    """A photo that ends here, with its reason; the same entry on both runtimes."""
    return ManifestEntry(
        source=photo.source,
        sku=photo.sku,
        status=Status.FAILED,
        error=error,
        content_sha256=sha,
        settings_fingerprint=settings.fingerprint(),
        requested_jobs=jobs_for(photo.sidecar, settings.jobs),
    )


def image_id_for(source: str, content_sha256: str) -> str:
    """Locally a photo is its path and its bytes (on AWS: the object version)."""
    return hashlib.sha256(f"{source}\n{content_sha256}".encode()).hexdigest()[:32]


def process_input(photo: InputPhoto, out_dir: Path, settings: RunSettings, remover: BackgroundRemover) -> ManifestEntry:
    """Prepare one input file (the same stage as the prepare Lambda); any per-file problem becomes a failed entry."""
    if photo.sidecar_error:
        return failed_entry(photo, settings, photo.sidecar_error, None)
    try:
        data = photo.path.read_bytes()
    except OSError as error:
        return failed_entry(
            photo, settings, ProcessingError(code="unreadable", message=f"{photo.source}: {error}"), None
        )
    sha = hashlib.sha256(data).hexdigest()
    requested = jobs_for(photo.sidecar, settings.jobs)
    files_prefix = file_uri(out_dir / photo.output_stem) + "."
    try:
        result = prepare_image(
            PhotoToPrepare(
                data=data,
                image_id=image_id_for(photo.source, sha),
                source=photo.source,
                filename=photo.path.name,
                sku=photo.sku,
                publish_stem=photo.output_stem,
                content_sha256=sha,
                sidecar=sidecar_with_category(photo.sidecar, settings.category),
                kinds=requested,
            ),
            settings.brand,
            remover=remover,
            packshot_settings=settings.packshot_settings(),
            limits=settings.limits,
            storage=FileStorage([out_dir]),
            targets=PrepareTargets(
                files_prefix=files_prefix,
                previews_prefix=file_uri(out_dir / REPORT_FILES / photo.output_stem) + ".",
                jobs_prefix=files_prefix,
            ),
            reviewers=(settings.brand.profile.reviewers if settings.brand.profile else ()) or settings.reviewers,
        )
    except CatalogError as error:
        return failed_entry(photo, settings, ProcessingError(code=error.code, message=error.message), sha)
    prepared = result.prepared
    return ManifestEntry(
        source=photo.source,
        sku=photo.sku,
        status=Status.SUCCEEDED,
        content_sha256=sha,
        settings_fingerprint=settings.fingerprint(),
        requested_jobs=requested,
        outputs=manifest_outputs(prepared, out_dir),
        checks=prepared.checks,
        intake=prepared.intake,
        cutout=prepared.cutout,
        prepared=prepared,
    )


# -- the batch ----------------------------------------------------------------------------------------------------


def _job_on_disk(result: JobResult, out_dir: Path) -> bool:
    """Whether every file a finished job wrote is there: its outputs, and the masks their details name under OUT
    (the checks read those; other URIs in the details, a brand's adapter or model photo, are not the job's)."""
    root = out_dir.resolve()
    for output in result.outputs:
        written = [
            value
            for key, value in output.details.items()
            if key.endswith("_uri") and key != "input_uri" and isinstance(value, str) and value.startswith("file:")
        ]
        try:
            if not path_of(output.uri).is_file():
                return False
            if not all(path_of(uri).is_file() for uri in written if root in path_of(uri).resolve().parents):
                return False
        except ValueError:  # not a file:// URI: nothing this run can vouch for
            return False
    return True


def finished_jobs(entry: ManifestEntry, out_dir: Path) -> tuple[JobResult, ...]:
    """The entry's GPU jobs that succeeded and whose files are all on disk: a re-run keeps them, runs the rest."""
    return tuple(r for r in entry.jobs if r.status is Status.SUCCEEDED and _job_on_disk(r, out_dir))


def missing_jobs(entry: ManifestEntry) -> list[JobRequest]:
    """The GPU jobs prepare asked for that have no succeeded result yet (all of them on a first run)."""
    if entry.status is not Status.SUCCEEDED or entry.prepared is None:
        return []
    done = {r.job_id for r in entry.jobs if r.status is Status.SUCCEEDED}
    return [request for request in entry.prepared.jobs if request.job_id not in done]


def _reusable(previous: ManifestEntry | None, photo: InputPhoto, out_dir: Path, fingerprint: str) -> bool:
    """Whether the previous run's prepare outputs for this photo stand (its GPU jobs may still be to run)."""
    if previous is None or previous.status is not Status.SUCCEEDED or previous.settings_fingerprint != fingerprint:
        return False
    if photo.sidecar_error or not all((out_dir / path).is_file() for path in previous.outputs.values()):
        return False
    if previous.prepared is None and len(previous.requested_jobs) > 1:
        return False  # GPU jobs were asked for but their requests were not recorded
    try:
        return hashlib.sha256(photo.path.read_bytes()).hexdigest() == previous.content_sha256
    except OSError:
        return False


def _reused(previous: ManifestEntry, out_dir: Path) -> ManifestEntry:
    """The previous entry, kept: its finished jobs stay; with any job to (re)run its review items are made again."""
    jobs = finished_jobs(previous, out_dir)
    update: dict[str, object] = {"reused": True, "jobs": jobs}
    if jobs != previous.jobs or missing_jobs(previous.model_copy(update={"jobs": jobs})):
        update["review_items"] = ()
    return previous.model_copy(update=update)


_worker_remover: BackgroundRemover | None = None
_worker_settings: RunSettings | None = None


def build_remover(settings: RunSettings, threads: int | None) -> BackgroundRemover:
    return background_remover_from_spec(
        settings.background,
        models_dir=settings.models_dir,
        allow_download=settings.allow_download,
        commercial=settings.commercial,
        threads=threads,
    )


def _init_worker(settings: RunSettings, threads: int) -> None:
    """Runs once per worker process: one engine (one ONNX session) per process, reused for every photo."""
    global _worker_remover, _worker_settings
    import cv2

    keep_image_buffers()  # photo after photo: reuse the freed buffers rather than fault fresh pages in each time
    one_blas_thread()  # OpenBLAS' idle threads would spin on the cores the other workers use
    cv2.setNumThreads(threads)
    _worker_settings = settings
    _worker_remover = build_remover(settings, threads)


def _process_in_worker(photo: InputPhoto, out_dir: Path) -> ManifestEntry:
    assert _worker_remover is not None and _worker_settings is not None
    return process_input(photo, out_dir, _worker_settings, _worker_remover)


def _unexpected_failure(photo: InputPhoto, settings: RunSettings, error: BaseException) -> ManifestEntry:
    # A bug or a crashed worker must not take the batch down; the file is reported and the rest go on.
    message = f"{photo.source}: processing stopped unexpectedly ({type(error).__name__}: {error})."
    return failed_entry(photo, settings, ProcessingError(code="internal_error", message=message), None)


def run_batch(
    photos: list[InputPhoto],
    out_dir: Path,
    settings: RunSettings,
    on_done: Callable[[ManifestEntry], None] = lambda entry: None,
    previous: Mapping[str, ManifestEntry] | None = None,
) -> EntrySpool:
    """Process every photo (reusing finished work), in input order in the result.

    Each entry goes to a spool on disk as it finishes (`previous`, the last run's, is read from one too): the result
    is read back one entry at a time, so memory stays flat however many photos the batch has.
    """
    fingerprint = settings.fingerprint()
    if settings.force:
        previous = {}
    elif previous is None:
        previous = load_previous_manifest(out_dir)
    results = EntrySpool(out_dir)
    pending: list[tuple[int, InputPhoto]] = []
    for index, photo in enumerate(photos):
        earlier = previous.get(photo.source)
        if earlier is not None and _reusable(earlier, photo, out_dir, fingerprint):
            entry = _reused(earlier, out_dir)
            results.put(entry, index)
            on_done(entry)
        else:
            pending.append((index, photo))

    for index, entry in _process_all(pending, out_dir, settings):
        results.put(entry, index)
        on_done(entry)
    results.flush()
    return results


# Workers start from a fresh server process (forkserver), never as forks of this one: a fork inherits OpenCV's thread
# pool in whatever state this process left it, and a worker's first OpenCV call (cv2.setNumThreads) could then wait
# forever. Seen when this process had used OpenCV before the batch (an earlier run in the same process, a caller's own
# image work). The bench sets "fork" so that the stages it swaps in reach the workers.
WORKER_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_pool(workers: int, settings: RunSettings, threads: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context(WORKER_START_METHOD)
    if WORKER_START_METHOD == "forkserver":
        # The server imports the stages once; each worker forks from it with them loaded (nothing has run there).
        context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(settings, threads))


def _process_all(
    pending: list[tuple[int, InputPhoto]], out_dir: Path, settings: RunSettings
) -> Iterator[tuple[int, ManifestEntry]]:
    if not pending:
        return
    workers = max(1, min(settings.workers, len(pending)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        keep_image_buffers()
        one_blas_thread()
        remover = build_remover(settings, threads)
        for index, photo in pending:
            try:
                yield index, process_input(photo, out_dir, settings, remover)
            except Exception as error:
                yield index, _unexpected_failure(photo, settings, error)
        return

    with _worker_pool(workers, settings, threads) as pool:
        # Submit in bounded waves so a batch of 10k photos does not queue 10k futures' arguments at once.
        queue: Iterator[tuple[int, InputPhoto]] = iter(pending)
        running: dict[Future[ManifestEntry], tuple[int, InputPhoto]] = {}
        for item in _take(queue, workers * 2):
            running[pool.submit(_process_in_worker, item[1], out_dir)] = item
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index, photo = running.pop(future)
                try:
                    yield index, future.result()
                except Exception as error:
                    yield index, _unexpected_failure(photo, settings, error)
                for item in _take(queue, 1):
                    running[pool.submit(_process_in_worker, item[1], out_dir)] = item


def _take(iterator: Iterator[tuple[int, InputPhoto]], count: int) -> Iterable[tuple[int, InputPhoto]]:
    for _ in range(count):
        item = next(iterator, None)
        if item is None:
            return
        yield item


def apply_results(entry: ManifestEntry, results: list[JobResult]) -> ManifestEntry:
    """The entry with its job results; a failed job fails the entry (its packshot stays written and listed)."""
    failed = [r for r in results if r.status is Status.FAILED]
    error = entry.error
    if failed and error is None:
        first = failed[0]
        reason = first.error.message if first.error else "no reason given"
        error = ProcessingError(
            code="job_failed", message=f"{entry.source}: the {first.kind.value} job failed: {reason}"
        )
    return entry.model_copy(
        update={"jobs": tuple(results), "status": Status.FAILED if failed else entry.status, "error": error}
    )


def _each_changed(
    entries: Sequence[ManifestEntry], change: Callable[[ManifestEntry], ManifestEntry]
) -> Sequence[ManifestEntry]:
    """`change` applied to every entry, in order: into a new spool when the entries are spooled, else a list."""
    if not isinstance(entries, EntrySpool):
        return [change(entry) for entry in entries]
    updated = entries.sibling()
    for position, (source, text) in enumerate(entries.items_text()):
        entry = ManifestEntry.model_validate_json(text)
        changed = change(entry)
        if changed is entry:
            updated.put_text(source, text, position)  # unchanged: its text as it was, not dumped again
        else:
            updated.put(changed, position)
    updated.flush()
    return updated


def run_job_stage(
    entries: Sequence[ManifestEntry],
    worker: Callable[[], GpuJobRunner],
    on_done: Callable[[JobResult], None] = lambda result: None,
) -> Sequence[ManifestEntry]:
    """Run the GPU jobs prepare asked for that have no finished result (a reused photo's unfinished ones too), one
    at a time: the worker is the endpoint's stand-in."""
    runner: GpuJobRunner | None = None

    def run_missing(entry: ManifestEntry) -> ManifestEntry:
        nonlocal runner
        todo = missing_jobs(entry)
        if not todo:
            return entry
        runner = runner or worker()
        results = {r.job_id: r for r in entry.jobs}
        for request in todo:
            results[request.job_id] = runner.run(request)
            on_done(results[request.job_id])
        assert entry.prepared is not None
        ordered = [results[request.job_id] for request in entry.prepared.jobs if request.job_id in results]
        return apply_results(entry.model_copy(update={"review_items": ()}), ordered)

    return _each_changed(entries, run_missing)


def check_and_itemise(
    entries: Sequence[ManifestEntry], out_dir: Path, settings: RunSettings
) -> Sequence[ManifestEntry]:
    """The automatic checks and review items (the same stage as the checks Lambda) for each prepared photo."""
    read_image = image_reader(FileStorage([out_dir]))

    def itemise(entry: ManifestEntry) -> ManifestEntry:
        if entry.status is not Status.SUCCEEDED or entry.prepared is None or (entry.reused and entry.review_items):
            return entry
        items = review_items(entry.prepared, entry.jobs, read_image, settings.max_pixel_difference)
        return entry.model_copy(update={"review_items": tuple(items)})

    return _each_changed(entries, itemise)


def count_gpu_jobs(entries: Iterable[ManifestEntry]) -> int:
    return sum(len(missing_jobs(entry)) for entry in entries)


def _manifest_head(out_dir: Path, input_root: Path, settings: RunSettings, started: datetime) -> RunManifest:
    """The manifest's own fields; its entries are written (and read back) one at a time."""
    return RunManifest(
        tool_version=tool_version(),
        started_at=started,
        finished_at=datetime.now(UTC),
        input_root=str(input_root),
        output_root=str(out_dir.resolve()),
        options=settings.run_options(),
        entries=(),
    )


def _entry_texts(entries: Iterable[ManifestEntry]) -> Iterator[str]:
    if isinstance(entries, EntrySpool):
        yield from entries.texts()  # stored as dumped: nothing to validate or dump again
    else:
        for entry in entries:
            yield entry.model_dump_json(indent=2)


def write_manifest(
    out_dir: Path, input_root: Path, settings: RunSettings, started: datetime, entries: Iterable[ManifestEntry]
) -> RunManifest:
    """Write OUT/manifest.json atomically, one entry at a time.

    Entries given in a list come back in the returned manifest as they are. Any other iterable (a spool) comes back
    as `ManifestEntriesOnDisk`: the entries read from the file just written, one at a time, never all in memory.
    """
    head = _manifest_head(out_dir, input_root, settings, started)
    path = out_dir / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w+b") as file:
        spans = write_manifest_entries(head, _entry_texts(entries), file)
        file.flush()
        handle = None if isinstance(entries, list | tuple) else os.dup(file.fileno())
    os.replace(partial, path)
    if handle is None:
        return head.model_copy(update={"entries": tuple(entries)})
    # Not validated again: every entry was a ManifestEntry when it was written, and is validated as it is read.
    return head.model_copy(update={"entries": ManifestEntriesOnDisk(handle, spans)})


class Progress(Protocol):
    """What a runtime reports while it runs (the CLI draws it as progress bars)."""

    def photo_done(self, entry: ManifestEntry) -> None: ...

    def start_jobs(self, count: int) -> None: ...

    def job_done(self, result: JobResult) -> None: ...


ShowLink = Callable[[str, str, timedelta], None]


class CheckpointedProgress:
    """Progress that also writes the manifest as the run goes, so a killed run's finished work is found again.

    An entry is recorded only after its files are written (prepare writes before returning; a job's result arrives
    after its outputs and result.json), so the manifest on disk never claims a file that is not there. Photos not
    reached yet keep the previous run's entry (its files are still on disk, and the next run judges them again).
    Writes are at most one per `interval_s` (longer when the manifest is large) for photos, one after every GPU job,
    and one at the end of prepare.
    """

    def __init__(
        self,
        progress: Progress,
        out_dir: Path,
        input_root: Path,
        settings: RunSettings,
        started: datetime,
        previous: Mapping[str, ManifestEntry],
        interval_s: float = 1.0,
    ) -> None:
        self.progress = progress
        self._write = lambda entries: write_manifest(out_dir, input_root, settings, started, entries)
        # What the manifest on disk lists, kept on disk too: the previous run's entries, each replaced as it finishes.
        self.entries = EntrySpool(out_dir)
        if isinstance(previous, PreviousEntries):
            for source, text in previous.spool.items_text():
                self.entries.put_text(source, text)
        else:
            for entry in previous.values():
                self.entries.put(entry)
        self._by_job: dict[str, str] = {}
        self.interval_s = interval_s
        self._last = 0.0
        self._wait_s = interval_s
        self._dirty = False

    def photo_done(self, entry: ManifestEntry) -> None:
        self.progress.photo_done(entry)
        self.record(entry)

    def start_jobs(self, count: int) -> None:
        self.save(force=True)
        self.progress.start_jobs(count)

    def job_done(self, result: JobResult) -> None:
        self.progress.job_done(result)
        source = self._by_job.get(result.job_id)
        entry = None if source is None else self.entries.get(source)
        if entry is not None:
            results = [r for r in entry.jobs if r.job_id != result.job_id] + [result]
            # A GPU job costs seconds to minutes: its result is always written at once.
            self.record(apply_results(entry.model_copy(update={"review_items": ()}), results), force=True)

    def record(self, entry: ManifestEntry, force: bool = False) -> None:
        self.entries.put(entry)
        for request in entry.prepared.jobs if entry.prepared else ():
            self._by_job[request.job_id] = entry.source
        self._dirty = True
        self.save(force)

    def close(self) -> None:
        """Delete the checkpoint's spool (the manifest on disk is the record)."""
        self.entries.close()

    def save(self, force: bool = False) -> None:
        if self._dirty and (force or time.monotonic() - self._last >= self._wait_s):
            began = time.monotonic()
            self._write(self.entries)
            self._last, self._dirty = time.monotonic(), False
            # A batch of 10k photos makes a large manifest: keep its writing under ~5% of the run.
            self._wait_s = max(self.interval_s, 20 * (self._last - began))


@dataclass(frozen=True)
class FinishedRun:
    manifest: RunManifest
    report: Path
    review: ReviewRunResult


def finish_run(
    input_root: Path,
    out_dir: Path,
    settings: RunSettings,
    started: datetime,
    entries: Sequence[ManifestEntry],
    previous: Mapping[str, ManifestEntry],
    review: ReviewOptions,
    on_link: ShowLink,
) -> FinishedRun:
    """What both runtimes end with: manifest, report, then the local review of this run's items.

    From here the entries are read from the manifest just written, and the run's spools are deleted.
    """
    from functions.local.report import write_report

    remove_stale_outputs(out_dir, previous, entries)
    manifest = write_manifest(out_dir, input_root.resolve(), settings, started, entries)
    close_spooled(entries, previous)
    # Rendered under a temporary name and renamed, like every other output: a kill never leaves half a report.
    partial = write_report(out_dir, manifest, f".{REPORT_NAME}.partial")
    report = out_dir / REPORT_NAME
    os.replace(partial, report)
    outcome = review_run(
        out_dir,
        manifest,
        review.mode,
        reviewer=review.reviewer,
        timeout=review.timeout,
        port=review.port,
        on_link=lambda link, email: on_link(link, email, review.timeout),
        publishing=review.publishing,
    )
    return FinishedRun(manifest, report, outcome)


def run_locally(
    input_root: Path,
    photos: list[InputPhoto],
    out_dir: Path,
    settings: RunSettings,
    review: ReviewOptions,
    progress: Progress,
    on_link: ShowLink,
) -> FinishedRun:
    """`--runtime local`: prepare on every core, GPU jobs in this process, checks, then review and publish."""
    from functions.adapters.local.gpu_worker import InProcessGpuWorker

    started = datetime.now(UTC)
    # 0. A run killed before this one may have left temporary files of unfinished writes: they are nobody's output.
    remove_interrupted_writes(out_dir)
    previous = load_previous_manifest(out_dir)  # on disk, read one entry at a time, as every list of entries below
    checkpoints = CheckpointedProgress(progress, out_dir, input_root.resolve(), settings, started, previous)
    # 1. Prepare every photo (reusing finished work, a killed run's included).
    entries: Sequence[ManifestEntry] = run_batch(
        photos, out_dir, settings, on_done=checkpoints.photo_done, previous=previous
    )
    # 2. GPU jobs one at a time in this process, standing in for the endpoint (one GPU); a reused photo's
    #    unfinished jobs run too.
    job_count = count_gpu_jobs(entries)  # checks each job's files on disk: once
    checkpoints.start_jobs(job_count)
    if job_count and settings.models is None:
        raise ConfigurationError(
            "GPU jobs need --models: `tiny` (random tiny models, to try the flow) or a config file."
        )
    models = settings.models or ""
    # The jobs read and write only the run's folders and the brand's folder in the store (its adapters, models).
    profile_uri = settings.brand.resolved.profile_uri
    brand_folders = [path_of(profile_uri).parent] if profile_uri and profile_uri.startswith("file:") else []
    job_roots = (input_root, out_dir, *brand_folders)
    if job_count:  # otherwise every entry would come through unchanged
        entries = run_job_stage(
            entries, lambda: InProcessGpuWorker(models, data_roots=job_roots), on_done=checkpoints.job_done
        )
    checkpoints.close()  # every result is in the manifest on disk and in `entries`
    # 3. The automatic checks turn every image into a review item with its flags.
    entries = check_and_itemise(entries, out_dir, settings)
    # 4. Manifest, report, review, publish.
    return finish_run(input_root, out_dir, settings, started, entries, previous, review, on_link)
