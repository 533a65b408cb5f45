"""GPU jobs in `catalog run --jobs ...`: the in-process worker stands in for the SageMaker async endpoint.

The requests are the same `JobRequest`s the endpoint takes on AWS, with `file://` URIs under the output folder.
`gpu_jobs` (and torch with it) is imported only when a GPU job is actually requested.
"""

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from schemas import (
    BrandProfile,
    GenerationProvenance,
    JobKind,
    JobRequest,
    JobResult,
    ManifestEntry,
    ProcessingError,
    ProductSidecar,
    ReviewItem,
    ReviewItemDetails,
    Status,
)

from .errors import ConfigurationError

if TYPE_CHECKING:
    from gpu_jobs.config import ModelConfig

GPU_JOB_KINDS = (JobKind.GHOST_MANNEQUIN, JobKind.TRY_ON, JobKind.LIFESTYLE)
TINY_MODELS = "tiny"
TINY_NOTE = (
    "Made with tiny random models (--models tiny): the image is noise by design; it shows the flow, not quality."
)
DEFAULT_BRAND = BrandProfile(brand="default", display_name="Default brand (no adapters)")


def parse_jobs(text: str) -> tuple[JobKind, ...]:
    """`packshot,lifestyle` -> job kinds; the packshot is always made (every GPU job starts from its cutout)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {kind.value for kind in JobKind}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigurationError(f"--jobs: unknown job {', '.join(unknown)}; choose from {', '.join(sorted(known))}.")
    return tuple(dict.fromkeys([JobKind.PACKSHOT, *map(JobKind, names)]))


def jobs_for(sidecar: ProductSidecar | None, default: Sequence[JobKind]) -> tuple[JobKind, ...]:
    """What to make for one photo: its SKU's `product.json` `jobs` when it names them, else `--jobs`."""
    if sidecar is not None and "jobs" in sidecar.model_fields_set:
        return tuple(dict.fromkeys([JobKind.PACKSHOT, *sidecar.jobs]))
    return tuple(default)


def gpu_jobs_in(kinds: Sequence[JobKind]) -> tuple[JobKind, ...]:
    return tuple(kind for kind in kinds if kind in GPU_JOB_KINDS)


def load_brand_profile(path: Path | None) -> BrandProfile:
    if path is None:
        return DEFAULT_BRAND
    try:
        return BrandProfile.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"--brand-profile {path}: {error}") from error


def load_model_config(models: str) -> "ModelConfig":
    """`tiny` or a model config JSON file; importing gpu_jobs here keeps torch out of runs without GPU jobs."""
    try:
        from gpu_jobs.config import ModelConfig
    except ImportError as error:
        raise ConfigurationError(
            f"GPU jobs need the gpu extra ({error.name} is missing): "
            "pip install torch==2.13.0 && pip install -e '.[gpu]'"
        ) from error
    if models == TINY_MODELS:
        return ModelConfig.tiny()
    try:
        return ModelConfig.from_file(Path(models))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"--models {models}: {error}") from error


def _file_uri(path: Path) -> str:
    return path.resolve().as_uri()


def relative_to_out(uri: str, out_dir: Path) -> str:
    """A `file://` URI under OUT as a path relative to OUT (what the manifest and the report use)."""
    path = Path(unquote(urlparse(uri).path))
    return path.resolve().relative_to(out_dir.resolve()).as_posix()


def build_requests(
    entry: ManifestEntry,
    sidecar: ProductSidecar | None,
    kinds: Sequence[JobKind],
    out_dir: Path,
    output_stem: str,
    brand: BrandProfile,
    fingerprint: str,
) -> list[JobRequest]:
    """One request per GPU job of a photo whose packshot stage succeeded. Ids and seeds are deterministic."""
    cutout = _file_uri(out_dir / entry.outputs["cutout"])
    inputs_by_kind = {
        JobKind.LIFESTYLE: {"cutout": cutout},
        JobKind.TRY_ON: {"garment": cutout},
        JobKind.GHOST_MANNEQUIN: {
            "image": _file_uri(out_dir / entry.outputs.get("normalised", entry.outputs["cutout"]))
        },
    }
    product = {
        key: value
        for key, value in (
            ("title", sidecar.title if sidecar else None),
            ("colour", sidecar.colour if sidecar else None),
            ("collection", sidecar.collection if sidecar else None),
        )
        if value
    }
    requests = []
    for kind in gpu_jobs_in(kinds):
        digest = hashlib.sha256(f"{entry.content_sha256}:{kind}:{fingerprint}".encode()).hexdigest()
        params: dict[str, object] = {"brand_profile": brand.model_dump(mode="json")}
        if kind is JobKind.LIFESTYLE:
            params["product"] = product
        requests.append(
            JobRequest(
                job_id=f"job-{digest[:24]}",
                kind=kind,
                brand=brand.brand,
                sku=entry.sku,
                category=sidecar.category if sidecar else ProductSidecar().category,
                inputs=inputs_by_kind[kind],
                output_prefix=_file_uri(out_dir / f"{output_stem}.{kind.value}") + "/",
                seed=int(digest[24:36], 16),
                params=params,
            )
        )
    return requests


def apply_results(entry: ManifestEntry, results: Sequence[JobResult]) -> ManifestEntry:
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


def run_gpu_jobs(
    requests: Sequence[JobRequest], models: str, on_done: Callable[[JobResult], None] = lambda result: None
) -> dict[str, JobResult]:
    """Run every request in this process, one at a time (one GPU), by job id."""
    from gpu_jobs.inprocess import run_job_in_process

    config = load_model_config(models)
    results = {}
    for request in requests:
        results[request.job_id] = run_job_in_process(request, config)
        on_done(results[request.job_id])
    return results


def review_items_for_jobs(entries: Sequence[ManifestEntry], out_dir: Path) -> list[ReviewItem]:
    """One review item per generated image, beside the photo it came from."""
    items = []
    for entry in entries:
        for result in entry.jobs:
            if result.status is not Status.SUCCEEDED:
                continue
            adapters = ",".join(sorted(result.adapter_versions)) or None
            for output in result.outputs:
                generated = relative_to_out(output.uri, out_dir)
                items.append(
                    ReviewItem(
                        item_id="g" + hashlib.sha256(generated.encode()).hexdigest()[:16],
                        sku=entry.sku,
                        original=entry.outputs.get("thumb_original", entry.outputs.get("cutout", generated)),
                        generated=generated,
                        job_kind=result.kind.value,
                        details=ReviewItemDetails(
                            source=entry.source,
                            content_sha256=entry.content_sha256,
                            provenance=GenerationProvenance(
                                engine=result.kind.value,
                                model_version=result.model_version,
                                adapter=adapters,
                                adapter_version=",".join(f"{k}={v}" for k, v in sorted(result.adapter_versions.items()))
                                or None,
                                seed=output.seed,
                            ),
                        ),
                    )
                )
    return items
