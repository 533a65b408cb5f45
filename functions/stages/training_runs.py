"""From a finished training run's output folder to a registered `name@vN`, the same for both runtimes.

A run is named by its `run_key`: the brand, the adapter name, the dataset's hash and every training setting. The
local work folder, the SageMaker job name and the version's claim all derive from it, so re-running the same
command finds the same run (and resumes it) instead of starting another.
"""

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from functions.stages.brand_versions import BrandStoreError, VersionStorage, register_version
from schemas.brand_versions import BrandVersion
from schemas.dataset import DatasetManifest, dataset_digest
from schemas.training import TrainingConfig, TrainingReport

DATASET_FILE = "dataset.json"
REPORT_FILE = "training.json"
VALIDATION_FOLDER = "validation"


def read_dataset(dataset_dir: Path) -> DatasetManifest:
    """`DS/dataset.json` as `catalog train dataset check` wrote it; BrandStoreError naming the file otherwise."""
    path = dataset_dir / DATASET_FILE
    try:
        manifest = DatasetManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError as error:
        raise BrandStoreError(f"{path}: no dataset here; run `catalog train dataset check` first") from error
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise BrandStoreError(f"{path} is not valid: {where}: {first['msg']}") from error
    if not manifest.kept:
        raise BrandStoreError(f"{path}: no photo was kept, so there is nothing to train on")
    return manifest


def dataset_hash(dataset_dir: Path, manifest: DatasetManifest) -> str:
    """The kept images and their captions as they are now (edited `.txt` files included): `dataset_digest`."""
    kept: list[tuple[str, bytes, str]] = []
    for photo in manifest.kept:
        caption = photo.caption or ""
        try:
            image = (dataset_dir / (photo.image_file or "")).read_bytes() if photo.image_file else b""
            if photo.caption_file:
                caption = (dataset_dir / photo.caption_file).read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise BrandStoreError(f"{dataset_dir / 'dataset.json'}: photo {photo.id!r}: {error}") from error
        kept.append((photo.id, image, caption))
    return dataset_digest(kept)


def run_key(config: TrainingConfig, dataset_sha256: str) -> str:
    """One training run's identity: the same brand, name, dataset and settings give the same key."""
    settings = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(f"{config.brand}\n{config.name}\n{dataset_sha256}\n{settings}".encode()).hexdigest()[:24]


def finished_report(output_dir: Path) -> TrainingReport | None:
    """The run's report when it finished (training.json is written last and must parse), else None."""
    try:
        return TrainingReport.model_validate_json((output_dir / REPORT_FILE).read_bytes())
    except (FileNotFoundError, ValidationError):
        return None


def version_files(output_dir: Path, manifest_bytes: bytes) -> tuple[dict[str, bytes], TrainingReport]:
    """What a version keeps of a run's output: adapters, embeddings, training.json, the validation grid, dataset.json.

    Checkpoints stay behind (they are for resuming, not for using). A missing adapter or report is an error
    naming the file: an unfinished run is never registered.
    """
    report_path = output_dir / REPORT_FILE
    try:
        report = TrainingReport.model_validate_json(report_path.read_bytes())
    except FileNotFoundError as error:
        raise BrandStoreError(f"{report_path}: the run has no report, so it did not finish") from error
    except ValidationError as error:
        raise BrandStoreError(f"{report_path} is not a valid training report: {error.errors()[0]['msg']}") from error
    names = [report.lora_file, report.kohya_file, REPORT_FILE]
    if report.embeddings_file:
        names.append(report.embeddings_file)
    files: dict[str, bytes] = {}
    for name in names:
        path = output_dir / name
        if not path.is_file():
            if name == report.kohya_file:
                continue  # the kohya copy is a convenience for other tools
            raise BrandStoreError(f"{path}: missing from the run's output")
        files[name] = path.read_bytes()
    validation = output_dir / VALIDATION_FOLDER
    if validation.is_dir():
        for path in sorted(validation.rglob("*")):
            if path.is_file():
                files[path.relative_to(output_dir).as_posix()] = path.read_bytes()
    files[DATASET_FILE] = manifest_bytes
    return files, report


def register_run(
    storage: VersionStorage,
    brands_uri: str,
    config: TrainingConfig,
    output_dir: Path,
    manifest_bytes: bytes,
    *,
    key: str,
    source: str,
) -> BrandVersion:
    """Register the run in `output_dir` as the brand's next `name@vN` (or return the version it already is)."""
    files, report = version_files(output_dir, manifest_bytes)
    return register_version(
        storage,
        brands_uri,
        config.brand,
        config.name.lower(),
        files,
        run_key=key,
        source=source,
        embeddings_file=report.embeddings_file,
        trigger_token=report.token_abstraction or config.trigger_token,
        dataset_sha256=report.dataset_sha256,
        base_model=report.base_model,
        steps=report.steps_done,
    )
