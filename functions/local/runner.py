"""`catalog run` on one machine: find the photos, process them on every core, write outputs, manifest, report.

Originals are only ever read. Every output lands under the output folder, written atomically, so an interrupted
run never leaves a half-written file that a re-run would take for finished work.
"""

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from schemas import (
    Box,
    BrandProfile,
    Cutout,
    IntakeInfo,
    JobKind,
    JobResult,
    ManifestEntry,
    ProcessingError,
    ProductSidecar,
    RunManifest,
    RunOptions,
    Status,
)

from .background import BackgroundRemover, background_remover_from_spec
from .encoding import encode_image, extension_for
from .errors import CatalogError, ConfigurationError
from .intake import IntakeLimits
from .local_jobs import DEFAULT_BRAND, apply_results, build_requests, gpu_jobs_in, jobs_for, relative_to_out
from .packshot import PackshotPreset, PackshotSettings
from .pipeline import ProcessedPhoto, process_photo

SIDECAR_NAME = "product.json"
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.html"
REPORT_FILES = "report_files"
THUMBNAIL_SIDE = 360
# Files a camera, OS or sync tool leaves beside photos; never product photos.
IGNORED_NAMES = frozenset({SIDECAR_NAME, "Thumbs.db", "desktop.ini", "Icon\r"})


def tool_version() -> str:
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
    brand_profile: BrandProfile = DEFAULT_BRAND

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
            brand=self.brand_profile.brand,
        )

    def fingerprint(self) -> str:
        """Hash of what decides the output bytes; a change re-processes every photo."""
        shaping = {
            "tool": tool_version(),
            "options": self.run_options().model_dump(mode="json"),
            "limits": asdict(self.limits),
            "brand_profile": self.brand_profile.model_dump(mode="json"),
        }
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InputPhoto:
    """One file found under the input folder, with the SKU it belongs to and what its sidecar says."""

    path: Path
    source: str  # relative to the input root, forward slashes
    sku: str
    output_stem: str  # relative to OUT, without the output kind and extension
    sidecar: ProductSidecar | None = None
    sidecar_error: ProcessingError | None = None


# -- discovery ---------------------------------------------------------------------------------------------------


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES or name == "__MACOSX"


def _safe_name(text: str) -> str:
    """A file-system-safe form of a SKU or file stem (SKUs come from merchandisers and may hold anything)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "_"


def read_sidecar(path: Path, display: str) -> tuple[ProductSidecar | None, ProcessingError | None]:
    """Parse a `product.json`; an error names the file and the field, and fails that SKU's photos only."""
    try:
        return ProductSidecar.model_validate_json(path.read_bytes()), None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()
        )
        return None, ProcessingError(code="invalid_sidecar", message=f"{display} is not valid: {problems}.")
    except OSError as error:
        return None, ProcessingError(code="invalid_sidecar", message=f"{display} cannot be read: {error}.")


def discover_inputs(root: Path, exclude: Path | None = None) -> list[InputPhoto]:
    """Photos under `root`: each sub-folder is a SKU (with an optional product.json), each loose file its own SKU.

    Every other file is listed too, so that a stray PDF or SVG is reported rather than silently skipped.
    """
    root = root.resolve()
    excluded = exclude.resolve() if exclude else None
    if root.is_file():
        return [InputPhoto(root, root.name, root.stem, f"{_safe_name(root.stem)}/{_safe_name(root.stem)}")]

    found: list[InputPhoto] = []
    for entry in sorted(root.iterdir()):
        if _is_ignored(entry.name) or (excluded and entry.resolve() == excluded):
            continue
        if entry.is_file():
            sku = entry.stem
            found.append(InputPhoto(entry, entry.name, sku, f"{_safe_name(sku)}/{_safe_name(entry.stem)}"))
        elif entry.is_dir():
            found.extend(_discover_sku_folder(root, entry, excluded))
    return found


def _discover_sku_folder(root: Path, folder: Path, excluded: Path | None) -> list[InputPhoto]:
    sidecar, sidecar_error = None, None
    sidecar_path = folder / SIDECAR_NAME
    if sidecar_path.is_file():
        sidecar, sidecar_error = read_sidecar(sidecar_path, sidecar_path.relative_to(root).as_posix())
    sku = sidecar.sku if sidecar and sidecar.sku else folder.name

    files = [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and not any(_is_ignored(part) for part in path.relative_to(folder).parts)
        and not (excluded and excluded in path.resolve().parents)
    ]
    stems = [path.relative_to(folder).with_suffix("").as_posix() for path in files]
    photos = []
    for path, stem in zip(files, stems, strict=True):
        # Two files differing only by extension (front.jpg, front.png) must not share outputs.
        name = stem if stems.count(stem) == 1 else f"{stem}{path.suffix}"
        output_stem = f"{_safe_name(sku)}/{_safe_name(name.replace('/', '__'))}"
        photos.append(InputPhoto(path, path.relative_to(root).as_posix(), sku, output_stem, sidecar, sidecar_error))
    return photos


# -- one photo ----------------------------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _failed(photo: InputPhoto, settings: RunSettings, error: ProcessingError, sha: str | None) -> ManifestEntry:
    return ManifestEntry(
        source=photo.source,
        sku=photo.sku,
        status=Status.FAILED,
        error=error,
        content_sha256=sha,
        settings_fingerprint=settings.fingerprint(),
        requested_jobs=jobs_for(photo.sidecar, settings.jobs),
    )


def process_input(photo: InputPhoto, out_dir: Path, settings: RunSettings, remover: BackgroundRemover) -> ManifestEntry:
    """Process one input file and write its outputs; any per-file problem becomes a failed entry."""
    if photo.sidecar_error:
        return _failed(photo, settings, photo.sidecar_error, None)
    try:
        data = photo.path.read_bytes()
    except OSError as error:
        return _failed(photo, settings, ProcessingError(code="unreadable", message=f"{photo.source}: {error}"), None)
    sha = hashlib.sha256(data).hexdigest()

    try:
        packshot_settings = settings.packshot_settings()
        result = process_photo(data, photo.source, remover, packshot_settings, settings.limits)
    except CatalogError as error:
        return _failed(photo, settings, ProcessingError(code=error.code, message=error.message), sha)

    fmt = packshot_settings.resolved_format
    outputs = {
        "cutout": f"{photo.output_stem}.cutout.png",
        "mask": f"{photo.output_stem}.mask.png",
        "packshot": f"{photo.output_stem}.packshot{extension_for(fmt)}",
    }
    _write_atomically(out_dir / outputs["cutout"], encode_image(result.cutout, "png"))
    _write_atomically(out_dir / outputs["mask"], encode_image(result.background.mask, "png"))
    _write_atomically(
        out_dir / outputs["packshot"],
        encode_image(result.packshot.image, fmt, quality=packshot_settings.quality),
    )
    outputs.update(_write_thumbnails(out_dir, photo.output_stem, result))
    requested = jobs_for(photo.sidecar, settings.jobs)
    if JobKind.GHOST_MANNEQUIN in requested:
        # The ghost-mannequin job needs the photo with its mannequin, as intake normalised it (sRGB, upright).
        outputs["normalised"] = f"{photo.output_stem}.normalised.png"
        _write_atomically(out_dir / outputs["normalised"], encode_image(result.normalised.image, "png"))

    info = result.normalised.info
    box = result.background.mask.getbbox()
    mask_hist = result.background.mask.histogram()
    coverage = sum(i * n for i, n in enumerate(mask_hist)) / (255 * info.width * info.height)
    return ManifestEntry(
        source=photo.source,
        sku=photo.sku,
        status=Status.SUCCEEDED,
        content_sha256=sha,
        settings_fingerprint=settings.fingerprint(),
        requested_jobs=requested,
        outputs=outputs,
        checks=result.checks,
        intake=IntakeInfo.model_validate(info.model_dump()),
        cutout=Cutout(
            engine=result.background.engine,
            confidence=round(result.background.confidence, 4),
            low_confidence=result.background.low_confidence,
            backdrop_rgb=result.background.backdrop_rgb,
            product_box=Box(left=box[0], top=box[1], right=box[2], bottom=box[3]) if box else None,
            coverage=round(min(1.0, coverage), 4),
        ),
    )


def _write_thumbnails(out_dir: Path, output_stem: str, result: ProcessedPhoto) -> dict[str, str]:
    """Small previews for the report, so it opens fast even for a batch of 24 MP photos."""
    previews = {
        "thumb_original": (result.normalised.image.convert("RGB"), "jpeg", ".jpg"),
        "thumb_cutout": (result.cutout, "png", ".png"),
        "thumb_packshot": (
            result.packshot.image,
            "png" if result.packshot.image.mode == "RGBA" else "jpeg",
            None,
        ),
    }
    written = {}
    for kind, (image, fmt, ext) in previews.items():
        thumb = image.copy()
        thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        relative = (
            f"{REPORT_FILES}/{output_stem}.{kind.removeprefix('thumb_')}{ext or ('.png' if fmt == 'png' else '.jpg')}"
        )
        _write_atomically(out_dir / relative, encode_image(thumb, fmt, quality=85))  # type: ignore[arg-type]
        written[kind] = relative
    return written


# -- the batch ----------------------------------------------------------------------------------------------------


def load_previous_manifest(out_dir: Path) -> dict[str, ManifestEntry]:
    """Entries of the last run into this folder, by source; an unreadable manifest just means no reuse."""
    try:
        manifest = RunManifest.model_validate_json((out_dir / MANIFEST_NAME).read_bytes())
    except (OSError, ValidationError):
        return {}
    return {entry.source: entry for entry in manifest.entries}


def _reusable(previous: ManifestEntry | None, photo: InputPhoto, out_dir: Path, fingerprint: str) -> bool:
    if previous is None or previous.status is not Status.SUCCEEDED or previous.settings_fingerprint != fingerprint:
        return False
    if photo.sidecar_error or not all((out_dir / path).is_file() for path in previous.outputs.values()):
        return False
    job_outputs = [relative_to_out(output.uri, out_dir) for job in previous.jobs for output in job.outputs]
    if not all((out_dir / path).is_file() for path in job_outputs):
        return False
    try:
        return hashlib.sha256(photo.path.read_bytes()).hexdigest() == previous.content_sha256
    except OSError:
        return False


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

    cv2.setNumThreads(threads)
    _worker_settings = settings
    _worker_remover = build_remover(settings, threads)


def _process_in_worker(photo: InputPhoto, out_dir: Path) -> ManifestEntry:
    assert _worker_remover is not None and _worker_settings is not None
    return process_input(photo, out_dir, _worker_settings, _worker_remover)


def _unexpected_failure(photo: InputPhoto, settings: RunSettings, error: BaseException) -> ManifestEntry:
    # A bug or a crashed worker must not take the batch down; the file is reported and the rest go on.
    message = f"{photo.source}: processing stopped unexpectedly ({type(error).__name__}: {error})."
    return _failed(photo, settings, ProcessingError(code="internal_error", message=message), None)


def run_batch(
    photos: list[InputPhoto],
    out_dir: Path,
    settings: RunSettings,
    on_done: Callable[[ManifestEntry], None] = lambda entry: None,
) -> list[ManifestEntry]:
    """Process every photo (reusing finished work), in input order in the result."""
    fingerprint = settings.fingerprint()
    previous = {} if settings.force else load_previous_manifest(out_dir)
    results: dict[int, ManifestEntry] = {}
    pending: list[tuple[int, InputPhoto]] = []
    for index, photo in enumerate(photos):
        earlier = previous.get(photo.source)
        if earlier is not None and _reusable(earlier, photo, out_dir, fingerprint):
            results[index] = earlier.model_copy(update={"reused": True})
            on_done(results[index])
        else:
            pending.append((index, photo))

    for index, entry in _process_all(pending, out_dir, settings):
        results[index] = entry
        on_done(entry)
    return [results[i] for i in range(len(photos))]


def _process_all(
    pending: list[tuple[int, InputPhoto]], out_dir: Path, settings: RunSettings
) -> Iterator[tuple[int, ManifestEntry]]:
    if not pending:
        return
    workers = max(1, min(settings.workers, len(pending)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        remover = build_remover(settings, threads)
        for index, photo in pending:
            try:
                yield index, process_input(photo, out_dir, settings, remover)
            except Exception as error:
                yield index, _unexpected_failure(photo, settings, error)
        return

    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(settings, threads)) as pool:
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


def run_job_stage(
    photos: list[InputPhoto],
    entries: list[ManifestEntry],
    out_dir: Path,
    settings: RunSettings,
    on_done: Callable[[JobResult], None] = lambda result: None,
) -> list[ManifestEntry]:
    """Run the GPU jobs of every photo whose packshot stage succeeded (and was not reused), in this process."""
    from .local_jobs import run_gpu_jobs

    fingerprint = settings.fingerprint()
    plans = []
    for index, (photo, entry) in enumerate(zip(photos, entries, strict=True)):
        if entry.status is Status.SUCCEEDED and not entry.reused and gpu_jobs_in(entry.requested_jobs):
            requests = build_requests(
                entry,
                photo.sidecar,
                entry.requested_jobs,
                out_dir,
                photo.output_stem,
                settings.brand_profile,
                fingerprint,
            )
            plans.append((index, requests))
    if not plans:
        return entries
    if settings.models is None:
        raise ConfigurationError(
            "GPU jobs need --models: `tiny` (random tiny models, to try the flow) or a config file."
        )
    results = run_gpu_jobs([request for _, requests in plans for request in requests], settings.models, on_done)
    updated = list(entries)
    for index, requests in plans:
        updated[index] = apply_results(entries[index], [results[request.job_id] for request in requests])
    return updated


def count_gpu_jobs(entries: list[ManifestEntry]) -> int:
    return sum(len(gpu_jobs_in(e.requested_jobs)) for e in entries if e.status is Status.SUCCEEDED and not e.reused)


def remove_stale_outputs(out_dir: Path, previous: dict[str, ManifestEntry], entries: list[ManifestEntry]) -> None:
    """Delete outputs the last run wrote that this run no longer claims (e.g. after changing --format)."""
    kept = {path for entry in entries for path in entry.outputs.values()}
    root = out_dir.resolve()
    for entry in previous.values():
        for path in entry.outputs.values():
            target = (out_dir / path).resolve()
            if path not in kept and root in target.parents and target.is_file():
                target.unlink()


def write_manifest(
    out_dir: Path, input_root: Path, settings: RunSettings, started: datetime, entries: list[ManifestEntry]
) -> RunManifest:
    manifest = RunManifest(
        tool_version=tool_version(),
        started_at=started,
        finished_at=datetime.now(UTC),
        input_root=str(input_root),
        output_root=str(out_dir.resolve()),
        options=settings.run_options(),
        entries=tuple(entries),
    )
    _write_atomically(out_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode() + b"\n")
    return manifest


def relative_posix(path: Path, root: Path) -> str:
    return PurePosixPath(path.resolve().relative_to(root.resolve())).as_posix()
