"""The prepare task (container-image Lambda, rembg model baked in): intake -> background removal -> packshot.

Reads the original object version, runs `functions.pipeline.process_photo`, and writes the derived images to the
work bucket under `prepared/<image id>/`: never into the intake bucket, so originals cannot be
overwritten and nothing written here can trigger intake again. Returns the GPU jobs the product asks for.
"""

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, ValidationError

from functions.aws import settings
from functions.aws.clients import client
from functions.errors import CatalogError, IntakeError
from schemas import JobKind, ProductSidecar

logger = Logger(service="prepare")
tracer = Tracer(service="prepare")
metrics = Metrics(namespace="CatalogImages", service="prepare")

PREPARED_PREFIX = "prepared/"
GPU_OUTPUTS_PREFIX = "gpu/outputs/"
SIDECAR_NAME = "product.json"


class PrepareInput(BaseModel):
    """The execution input `ingest` writes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    bucket: str
    key: str
    version_id: str | None = None
    brand: str
    sku: str
    filename: str
    image_id: str


@lru_cache(maxsize=1)
def background_remover() -> Any:
    """Built once per execution environment: the ONNX session is the expensive part of a cold start."""
    from functions.background import background_remover_from_spec

    config = settings.load(settings.PrepareSettings)
    return background_remover_from_spec(
        config.background_spec, models_dir=Path(config.catalog_models_dir), commercial=config.commercial
    )


def read_sidecar(s3: Any, bucket: str, folder: str) -> ProductSidecar:
    """`product.json` beside the photo, or the defaults (a packshot only) when there is none."""
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{folder}{SIDECAR_NAME}")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return ProductSidecar()
    try:
        return ProductSidecar.model_validate_json(body)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "document"
        raise IntakeError("bad_sidecar", f"s3://{bucket}/{folder}{SIDECAR_NAME}: {where}: {problem['msg']}") from error


def gpu_job_specs(
    request: PrepareInput, sidecar: ProductSidecar, uris: dict[str, str], work_bucket: str, brand_profile: str | None
) -> list[dict[str, Any]]:
    """One Map item per GPU job; `submit_gpu_job` adds the attempt number to `job_id` and `output_prefix`."""
    inputs_by_kind = {
        JobKind.GHOST_MANNEQUIN: {"image": uris["normalised"]},
        JobKind.TRY_ON: {"garment": uris["cutout"]},
        JobKind.LIFESTYLE: {"cutout": uris["cutout"]},
    }
    product = {"title": sidecar.title, "colour": sidecar.colour, "collection": sidecar.collection}
    specs = []
    for kind in dict.fromkeys(sidecar.jobs):  # a kind listed twice is one job
        if kind is JobKind.PACKSHOT:
            continue  # made on the CPU, above
        inputs = dict(inputs_by_kind[kind])
        if brand_profile and kind in (JobKind.LIFESTYLE, JobKind.TRY_ON):
            inputs["brand_profile"] = brand_profile
        specs.append(
            {
                "job_id": f"{request.image_id}-{kind.value.replace('_', '-')}",
                "kind": kind.value,
                "brand": request.brand,
                "sku": sidecar.sku or request.sku,
                "category": sidecar.category.value,
                "inputs": inputs,
                "output_prefix": f"s3://{work_bucket}/{GPU_OUTPUTS_PREFIX}{request.image_id}/{kind.value}",
                "params": {"product": {k: v for k, v in product.items() if v}} if kind is JobKind.LIFESTYLE else {},
            }
        )
    return specs


def prepare(request: PrepareInput) -> dict[str, Any]:
    from functions.encoding import content_type_for, encode_image, extension_for
    from functions.packshot import PackshotSettings
    from functions.pipeline import process_photo

    config = settings.load(settings.PrepareSettings)
    s3 = client("s3")
    # 1. Read exactly the object version that was uploaded (a later upload to the same key is its own execution).
    get: dict[str, Any] = {"Bucket": request.bucket, "Key": request.key}
    if request.version_id:
        get["VersionId"] = request.version_id
    data = s3.get_object(**get)["Body"].read()
    folder = request.key.rsplit("/", 1)[0] + "/"
    packshot_settings = PackshotSettings(preset=config.packshot_preset, size=config.packshot_size)
    try:
        sidecar = read_sidecar(s3, request.bucket, folder)
        # 2. The CPU stages, in memory.
        photo = process_photo(data, request.filename, background_remover(), packshot_settings)
    except CatalogError as error:
        # Lambda hands Step Functions only the class name (the Catch's error) and str(error) (the cause):
        # put the stable code and the object in that string, or the failed execution names neither.
        source = f"s3://{request.bucket}/{request.key}"
        raise type(error)(error.code, f"{error.code}: {source}: {error.message}") from error

    # 3. Derived images to the work bucket, under this object version's own prefix.
    prefix = f"{PREPARED_PREFIX}{request.image_id}/"
    packshot_format = packshot_settings.resolved_format
    files = {
        "normalised": ("normalised.png", encode_image(photo.normalised.image, "png"), "image/png"),
        "cutout": ("cutout.png", encode_image(photo.cutout, "png"), "image/png"),
        "mask": ("mask.png", encode_image(photo.background.mask, "png"), "image/png"),
        "packshot": (
            f"packshot{extension_for(packshot_format)}",
            encode_image(photo.packshot.image, packshot_format, quality=packshot_settings.quality),
            content_type_for(packshot_format),
        ),
    }
    uris = {}
    for name, (file_name, body, content_type) in files.items():
        s3.put_object(Bucket=config.work_bucket, Key=prefix + file_name, Body=body, ContentType=content_type)
        uris[name] = f"s3://{config.work_bucket}/{prefix}{file_name}"

    reviewers = [address.strip() for address in config.reviewers.split(",") if address.strip()]
    return {
        "image_id": request.image_id,
        "brand": request.brand,
        "sku": sidecar.sku or request.sku,
        "filename": request.filename,
        "original": f"s3://{request.bucket}/{request.key}",
        "content_sha256": hashlib.sha256(data).hexdigest(),
        "engine": photo.background.engine,
        "flags": [flag.model_dump(mode="json") for flag in photo.checks],
        "reviewers": reviewers,
        **uris,
        "jobs": gpu_job_specs(request, sidecar, uris, config.work_bucket, config.brand_profile_uri),
    }


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = prepare(PrepareInput.model_validate(event))
    metrics.add_metric(name="ImagesPrepared", unit=MetricUnit.Count, value=1)
    logger.info("prepared", extra={"image_id": result["image_id"], "gpu_jobs": len(result["jobs"])})
    # Step Functions logs the output: keep it JSON-clean and small.
    return json.loads(json.dumps(result))
