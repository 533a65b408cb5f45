"""The prepare task (container-image Lambda, rembg model baked in): the CPU half of one product photo.

Reads exactly the uploaded object version, its SKU's `product.json` and its brand's profile from the brand store,
runs the prepare stage, and writes the derived images to the work bucket under `prepared/<image id>/`: never into
the intake bucket, so originals cannot be overwritten and nothing written here can trigger intake again.
Returns the `PreparedImage`, whose `jobs` the workflow's Map sends to the GPU endpoint.
"""

import hashlib
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters.aws.clients import client
from functions.adapters.aws.observability import tracer_for
from functions.adapters.aws.s3_storage import S3Storage
from functions.adapters.aws.settings import load
from functions.adapters.aws.settings.prepare import PrepareSettings
from functions.adapters.aws.transient import retry_transient
from functions.allocator import keep_image_buffers
from functions.errors import CatalogError
from schemas import ExecutionInput, PreparedImage

logger = Logger(service="prepare")
tracer = tracer_for("prepare")
metrics = Metrics(namespace="CatalogImages", service="prepare")
SETTINGS = PrepareSettings

# A warm environment prepares photo after photo: keep their buffers rather than fault them in afresh each time.
keep_image_buffers()

PREPARED_PREFIX = "prepared/"
GPU_OUTPUTS_PREFIX = "gpu/outputs/"


@lru_cache(maxsize=1)
def background_remover() -> Any:
    """Built once per execution environment: the ONNX session is the expensive part of a cold start."""
    from functions.blas_threads import one_blas_thread
    from functions.stages.background import background_remover_from_spec

    one_blas_thread()  # OpenBLAS' idle threads would spin on the cores prepare's encoding threads use
    config = load(SETTINGS)
    return background_remover_from_spec(
        config.background_spec, models_dir=Path(config.catalog_models_dir), commercial=config.commercial
    )


def publish_stem(request: ExecutionInput, intake_prefix: str, sku: str) -> str:
    """`<sku>/<photo>` as `catalog run` names it: sub-folders under the SKU joined with `__`, no extension."""
    from functions.stages.publish import safe_name

    below_sku = request.key[len(intake_prefix) :].split("/")[2:]
    name = str(PurePosixPath(*below_sku).with_suffix("")).replace("/", "__")
    return f"{safe_name(sku)}/{safe_name(name)}"


def prepare(request: ExecutionInput, config: PrepareSettings) -> PreparedImage:
    from functions.stages.brand import resolve_brand
    from functions.stages.gpu_requests import jobs_for, parse_jobs
    from functions.stages.intake import SIDECAR_NAME, IntakeLimits, parse_sidecar
    from functions.stages.packshot import PackshotSettings
    from functions.stages.prepare import PhotoToPrepare, PrepareTargets, prepare_image

    storage = S3Storage(client("s3"))
    source = f"s3://{request.bucket}/{request.key}"
    # 1. Exactly the object version that was uploaded (a later upload to the same key is its own execution).
    get: dict[str, Any] = {"Bucket": request.bucket, "Key": request.key}
    if request.version_id:
        get["VersionId"] = request.version_id
    data = client("s3").get_object(**get)["Body"].read()
    # The SKU folder's sidecar, as `catalog run` reads it, also for photos in sub-folders of the SKU.
    sku_folder = "/".join(request.key[len(config.intake_prefix) :].split("/")[:2])
    sidecar_uri = f"s3://{request.bucket}/{config.intake_prefix}{sku_folder}/{SIDECAR_NAME}"
    try:
        # 2. The SKU's sidecar and the brand's profile: a bad one fails this image, naming the field.
        try:
            sidecar = parse_sidecar(storage.read_bytes(sidecar_uri), sidecar_uri)
        except FileNotFoundError:
            sidecar = None
        brand = resolve_brand(request.brand, config.brands_uri, storage)
        sku = sidecar.sku if sidecar and sidecar.sku else request.sku
        # 3. The stage: CPU work, derived files under this object version's own prefixes, GPU job requests.
        prefix = f"s3://{config.work_bucket}/{PREPARED_PREFIX}{request.image_id}/"
        prepared = prepare_image(
            PhotoToPrepare(
                data=data,
                image_id=request.image_id,
                source=source,
                filename=request.filename,
                sku=request.sku,
                publish_stem=publish_stem(request, config.intake_prefix, sku),
                content_sha256=hashlib.sha256(data).hexdigest(),
                sidecar=sidecar,
                kinds=jobs_for(sidecar, parse_jobs(config.default_jobs)),
            ),
            brand,
            remover=background_remover(),
            packshot_settings=PackshotSettings(
                preset=config.packshot_preset,  # type: ignore[arg-type]
                size=config.packshot_size,
                fill_ratio=config.packshot_fill_ratio,
                output_format=config.packshot_format or None,  # type: ignore[arg-type]
                quality=config.packshot_quality,
            ),
            limits=IntakeLimits(max_pixels=int(config.max_megapixels * 1_000_000)),
            storage=storage,
            targets=PrepareTargets(
                files_prefix=prefix,
                previews_prefix=f"{prefix}preview.",
                jobs_prefix=f"s3://{config.work_bucket}/{GPU_OUTPUTS_PREFIX}{request.image_id}/",
            ),
            reviewers=(brand.profile.reviewers if brand.profile and brand.profile.reviewers else None)
            or config.reviewer_list(),
        )
    except CatalogError as error:
        # Lambda hands Step Functions only the class name (the Catch's error) and str(error) (the cause):
        # put the stable code and the object in that string, or the failed execution names neither.
        raise type(error)(error.code, f"{error.code}: {source}: {error.message}") from error
    return prepared.prepared


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient  # a throttled S3 read or write: the state machine retries the task
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = load(SETTINGS)
    prepared = prepare(ExecutionInput.model_validate(event), config)
    metrics.add_metric(name="ImagesPrepared", unit=MetricUnit.Count, value=1)
    logger.info(
        "prepared",
        extra={"image_id": prepared.image_id, "gpu_jobs": len(prepared.jobs), "brand_note": prepared.brand.note},
    )
    return prepared.model_dump(mode="json")
