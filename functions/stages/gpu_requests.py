"""Which GPU jobs a photo gets, and their requests: one builder and one job-id scheme for both runtimes.

- What to make: the SKU's `product.json` `jobs` when it names them, else the run's (or the stack's) default.
- Job id: `<image id>-<kind>`; the AWS submitter adds `-a<attempt>` so a retry is a new SageMaker InferenceId.
- Seed: from the photo's bytes and the job kind only, so the same photo gets the same images on every runtime.
- Every GPU job gets the brand's resolved profile (adapters, prompts, model library) when the brand has one.
- Category: the sidecar's when it names one, else the run's default (`catalog run --category`), else `other`.
"""

import hashlib
from collections.abc import Sequence

from functions.errors import ConfigurationError
from schemas import BrandProfile, GarmentCategory, JobKind, JobRequest, PreparedFiles, ProductSidecar

GPU_JOB_KINDS = (JobKind.GHOST_MANNEQUIN, JobKind.TRY_ON, JobKind.LIFESTYLE)


def parse_jobs(text: str) -> tuple[JobKind, ...]:
    """`packshot,lifestyle` -> job kinds; the packshot is always made (every GPU job starts from its cutout)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {kind.value for kind in JobKind}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigurationError(f"--jobs: unknown job {', '.join(unknown)}; choose from {', '.join(sorted(known))}.")
    return tuple(dict.fromkeys([JobKind.PACKSHOT, *map(JobKind, names)]))


def jobs_for(sidecar: ProductSidecar | None, default: Sequence[JobKind]) -> tuple[JobKind, ...]:
    """What to make for one photo: its SKU's `product.json` `jobs` when it names them, else the default."""
    if sidecar is not None and "jobs" in sidecar.model_fields_set:
        return tuple(dict.fromkeys([JobKind.PACKSHOT, *sidecar.jobs]))
    return tuple(dict.fromkeys([JobKind.PACKSHOT, *default]))


def sidecar_with_category(sidecar: ProductSidecar | None, default: GarmentCategory | None) -> ProductSidecar | None:
    """The sidecar with the run's default category filled in when it names none (its own category always wins)."""
    if default is None or (sidecar is not None and "category" in sidecar.model_fields_set):
        return sidecar
    if sidecar is None:
        return ProductSidecar(category=default)
    return sidecar.model_copy(update={"category": default})


def category_for(sidecar: ProductSidecar | None, default: GarmentCategory | None = None) -> GarmentCategory:
    """What the GPU jobs are told the garment is: the sidecar's category, else `default`, else `other`."""
    if sidecar is not None and ("category" in sidecar.model_fields_set or default is None):
        return sidecar.category
    return default or ProductSidecar().category


def gpu_jobs_in(kinds: Sequence[JobKind]) -> tuple[JobKind, ...]:
    return tuple(kind for kind in kinds if kind in GPU_JOB_KINDS)


def job_seed(content_sha256: str, kind: JobKind) -> int:
    return int(hashlib.sha256(f"{content_sha256}:{kind.value}".encode()).hexdigest()[:12], 16)


def job_id(image_id: str, kind: JobKind) -> str:
    return f"{image_id}-{kind.value.replace('_', '-')}"


def _inputs(kind: JobKind, files: PreparedFiles) -> dict[str, str]:
    if kind is JobKind.GHOST_MANNEQUIN:
        if files.normalised is None:
            raise ValueError("a ghost-mannequin job needs the normalised photo; prepare did not write it")
        # The cutout mask too: with tiny random models the recipe falls back to it when its segmenter finds none.
        return {"image": files.normalised, "mask": files.mask}
    if kind is JobKind.TRY_ON:
        return {"garment": files.cutout}
    return {"cutout": files.cutout}


def build_job_requests(
    *,
    image_id: str,
    content_sha256: str,
    brand: str,
    sku: str,
    sidecar: ProductSidecar | None,
    kinds: Sequence[JobKind],
    files: PreparedFiles,
    output_prefix: str,
    profile: BrandProfile | None,
    default_category: GarmentCategory | None = None,
) -> tuple[JobRequest, ...]:
    """One request per GPU job kind; outputs under `<output_prefix><kind>` (a folder locally, a prefix on S3).

    `default_category` is for photos whose sidecar names no category (`catalog run --category`).
    """
    product = {
        name: value
        for name, value in (
            ("title", sidecar.title if sidecar else None),
            ("colour", sidecar.colour if sidecar else None),
            ("collection", sidecar.collection if sidecar else None),
        )
        if value
    }
    requests = []
    for kind in gpu_jobs_in(kinds):
        params: dict[str, object] = {}
        if profile is not None:
            params["brand_profile"] = profile.model_dump(mode="json")
        if kind is JobKind.LIFESTYLE:
            params["product"] = product
        requests.append(
            JobRequest(
                job_id=job_id(image_id, kind),
                kind=kind,
                brand=brand,
                sku=sku,
                category=category_for(sidecar, default_category),
                inputs=_inputs(kind, files),
                output_prefix=f"{output_prefix}{kind.value}",
                seed=job_seed(content_sha256, kind),
                params=params,
            )
        )
    return tuple(requests)
