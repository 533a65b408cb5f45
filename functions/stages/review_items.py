"""What a reviewer is asked about for one photo: its packshot and every generated image, each with its flags and
where it came from (model, adapters and versions, seed), so a rejection says which LoRA made the image.
"""

import io
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from functions.ports import BlobStorage
from schemas import (
    GenerationProvenance,
    JobResult,
    PreparedImage,
    ReviewItem,
    ReviewItemDetails,
    Status,
)

if TYPE_CHECKING:
    from PIL import Image

    from functions.stages.checks import ReadImage

# Pillow and numpy (the pixel checks) load only with a generated image to check: a packshot-only photo, the default,
# is reviewed without them, which keeps them out of the checks Lambda's usual cold start (~1.1x the light floor).


def image_reader(storage: BlobStorage) -> "ReadImage":
    """Decode images read through the storage port (fully, so a truncated file fails in the check)."""

    def read_image(uri: str) -> "Image.Image":
        from PIL import Image

        with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
            image.load()
            return image.copy()

    return read_image


def packshot_publish_name(prepared: PreparedImage) -> str:
    suffix = PurePosixPath(prepared.files.packshot).suffix
    return f"{prepared.publish_stem}.packshot{suffix}"


def generated_publish_name(prepared: PreparedImage, result: JobResult, uri: str) -> str:
    return f"{prepared.publish_stem}.{result.kind.value}/{PurePosixPath(uri).name}"


def provenance_for(
    result: JobResult, seed: int | None, details: Mapping[str, Any] | None = None
) -> GenerationProvenance:
    """What made one output: model, adapters with their versions (`ss27=ss27@v3`), seed, and the prompt it used."""
    details = details or {}
    adapters = sorted(result.adapter_versions.items())
    return GenerationProvenance(
        engine=result.kind.value,
        model_version=result.model_version,
        adapter=",".join(name for name, _ in adapters) or None,
        adapter_version=",".join(f"{name}={version}" for name, version in adapters) or None,
        seed=seed,
        prompt=prompt if isinstance(prompt := details.get("prompt"), str) else None,
    )


def review_items(
    prepared: PreparedImage, results: Sequence[JobResult], read_image: "ReadImage", tolerance: int = 2
) -> list[ReviewItem]:
    """The packshot item, then one item per generated image with the automatic checks' flags."""
    original = prepared.files.original_preview or prepared.files.normalised or prepared.files.cutout
    source = ReviewItemDetails(
        source=prepared.source,
        content_sha256=prepared.content_sha256,
        generated_thumbnail=prepared.files.packshot_preview,
        publish_name=packshot_publish_name(prepared),
        provenance=GenerationProvenance(engine=prepared.cutout.engine),
    )
    items = [
        ReviewItem(
            item_id=f"{prepared.image_id}-packshot",
            sku=prepared.sku,
            original=original,
            generated=prepared.files.packshot,
            job_kind="packshot",
            flags=prepared.checks,
            details=source,
        )
    ]
    for result in results:
        if result.status is not Status.SUCCEEDED:
            continue
        from functions.stages.checks import check_generated_output

        for index, output in enumerate(result.outputs):
            items.append(
                ReviewItem(
                    item_id=f"{result.job_id}-{index}",
                    sku=prepared.sku,
                    original=original,
                    generated=output.uri,
                    job_kind=result.kind.value,
                    flags=check_generated_output(result.kind, output, read_image, tolerance),
                    details=source.model_copy(
                        update={
                            "generated_thumbnail": None,
                            "publish_name": generated_publish_name(prepared, result, output.uri),
                            "provenance": provenance_for(result, output.seed, output.details),
                        }
                    ),
                )
            )
    return items
