"""Automatic checks after the GPU jobs: turn every generated image into a review item with flags for the reviewer.

Flags, never fixes. The invariants the recipes promise are checked from the files they wrote:
- lifestyle: inside `keep_mask_uri` every output pixel equals `placed_uri` (the product's own pixels);
- try-on: outside `agnostic_mask_uri` every output pixel equals `model_uri` (the model photo is untouched);
- every output decodes as an image.
Pillow and numpy are imported when an image is checked, so the module itself loads fast.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import settings
from functions.aws.clients import client
from functions.aws.job_outcomes import s3_location
from schemas import QualityFlag, Severity
from schemas.review import GenerationProvenance, ReviewItem, ReviewItemDetails

logger = Logger(service="checks")
tracer = Tracer(service="checks")
metrics = Metrics(namespace="CatalogImages", service="checks")


def _read_image(uri: str) -> Any:
    import io

    from PIL import Image

    bucket, key = s3_location(uri)
    image = Image.open(io.BytesIO(client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()))
    image.load()
    return image


def preserved_region_difference(output_uri: str, reference_uri: str, mask_uri: str, inside: bool) -> int:
    """Largest per-channel difference between output and reference where the mask is (or is not) 255."""
    import numpy as np

    output = np.asarray(_read_image(output_uri).convert("RGB"), dtype=np.int16)
    reference = np.asarray(_read_image(reference_uri).convert("RGB"), dtype=np.int16)
    mask = np.asarray(_read_image(mask_uri).convert("L")) >= 128
    region = mask if inside else ~mask
    if output.shape != reference.shape or region.shape != output.shape[:2]:
        return 255
    if not region.any():
        return 0
    return int(np.abs(output - reference)[region].max())


def output_flags(kind: str, uri: str, details: dict[str, Any], tolerance: int) -> list[QualityFlag]:
    try:
        _read_image(uri)
    except Exception as error:  # any decoder error means the reviewer would see a broken image
        return [QualityFlag(code="unreadable_output", message=f"The generated image cannot be read: {error}.")]
    flags = []
    if kind == "lifestyle" and details.get("keep_mask_uri") and details.get("placed_uri"):
        difference = preserved_region_difference(uri, details["placed_uri"], details["keep_mask_uri"], inside=True)
        if difference > tolerance:
            flags.append(
                QualityFlag(
                    code="product_pixels_changed",
                    message=f"Product pixels differ from the original by up to {difference} levels.",
                )
            )
    if kind == "try_on" and details.get("agnostic_mask_uri") and details.get("model_uri"):
        difference = preserved_region_difference(uri, details["model_uri"], details["agnostic_mask_uri"], inside=False)
        if difference > tolerance:
            flags.append(
                QualityFlag(
                    code="model_photo_changed",
                    message=f"The model photo changed outside the garment area by up to {difference} levels.",
                )
            )
    if details.get("note"):
        flags.append(QualityFlag(code="test_model", severity=Severity.INFO, message=str(details["note"])))
    return flags


def review_items(prepared: dict[str, Any], gpu_results: list[dict[str, Any]], tolerance: int) -> list[ReviewItem]:
    source = ReviewItemDetails(
        source=prepared["original"],
        content_sha256=prepared.get("content_sha256"),
        provenance=GenerationProvenance(engine=prepared.get("engine")),
    )
    items = [
        ReviewItem(
            item_id=f"{prepared['image_id']}-packshot",
            sku=prepared["sku"],
            original=prepared["normalised"],
            generated=prepared["packshot"],
            job_kind="packshot",
            flags=tuple(QualityFlag.model_validate(flag) for flag in prepared.get("flags", [])),
            details=source,
        )
    ]
    for result in gpu_results:
        for index, output in enumerate(result.get("outputs", [])):
            details = output.get("details") or {}
            items.append(
                ReviewItem(
                    item_id=f"{result['job_id']}-{index}",
                    sku=prepared["sku"],
                    original=prepared["normalised"],
                    generated=output["uri"],
                    job_kind=result["kind"],
                    flags=tuple(output_flags(result["kind"], output["uri"], details, tolerance)),
                    details=source.model_copy(
                        update={
                            "provenance": GenerationProvenance(
                                engine=result["kind"],
                                model_version=result.get("model_version"),
                                seed=output.get("seed"),
                            )
                        }
                    ),
                )
            )
    return items


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings.load(settings.ChecksSettings)
    prepared = event["prepared"]
    items = review_items(prepared, event.get("gpu_results") or [], config.max_pixel_difference)
    flagged = sum(bool(item.flags) for item in items)
    metrics.add_metric(name="ItemsFlagged", unit=MetricUnit.Count, value=flagged)
    logger.info("checked", extra={"image_id": prepared["image_id"], "items": len(items), "flagged": flagged})
    return {
        "brand": prepared["brand"],
        "reviewers": prepared["reviewers"],
        "items": [item.model_dump(mode="json") for item in items],
    }
