"""The CPU half for one product photo: intake -> background removal -> cutout -> packshot -> checks, then the
derived files written through the storage port and the GPU job requests built.

`process_photo` works in memory; `prepare_image` is the stage both runtimes call: `catalog run` with `file://`
prefixes under OUT, the prepare Lambda with `s3://` prefixes in the work bucket. Where the process has more than one
core for the photo (OpenCV's thread count: one per worker in `catalog run`, all of a Lambda's), independent steps run
side by side on threads: the cutout's and the mask's PNGs beside the packshot, then the other encodings. Pillow,
OpenCV, numpy and zlib release the GIL while they work.
"""

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
from PIL import Image

from functions.encoding import content_type_for, encode_image, encode_png_rows, extension_for, image_rows
from functions.errors import BackgroundRemovalError
from functions.ports import BlobStorage
from functions.stages.background import BackgroundRemover, BackgroundResult, cutout_rows, make_cutout
from functions.stages.brand import BrandSelection
from functions.stages.gpu_requests import build_job_requests
from functions.stages.intake import IntakeLimits, NormalisedImage, normalise_image
from functions.stages.packshot import Packshot, PackshotSettings, compose_packshot, find_mask_parts, quality_checks
from schemas import (
    Box,
    Cutout,
    IntakeInfo,
    JobKind,
    PreparedFiles,
    PreparedImage,
    ProductSidecar,
    QualityFlag,
    Severity,
)

PREVIEW_SIDE = 360  # previews for the report and the review email: a batch of 24 MP photos still opens fast
# Previews shrink by whole-pixel box averaging to at most this factor above their size, then resample: on a 2000 px
# packshot a third of the time of Pillow's default (2.0), with no visible difference at 360 px.
PREVIEW_REDUCING_GAP = 1.0


@dataclass(frozen=True)
class ProcessedPhoto:
    """Everything made from one photo, aligned with the normalised image (cutout and mask share its size)."""

    normalised: NormalisedImage
    background: BackgroundResult
    # The cutout (RGBA, the normalised image's size) and the mask as PNG: on a 24 MP photo the two largest encodings,
    # under way on the pool while the packshot is composed; done once process_photo returns without a pool.
    cutout_png: Future[bytes]
    mask_png: Future[bytes]
    packshot: Packshot
    checks: tuple[QualityFlag, ...]


def process_photo(
    data: bytes,
    filename: str,
    remover: BackgroundRemover,
    packshot_settings: PackshotSettings,
    limits: IntakeLimits | None = None,
    pool: Executor | None = None,
) -> ProcessedPhoto:
    """Run the CPU stages on one photo's bytes. Raises IntakeError / BackgroundRemovalError naming `filename`.

    With a `pool`, the cutout and the mask are encoded on it while this thread composes the packshot."""
    # 1. Validate and normalise before any model sees the pixels.
    normalised = normalise_image(data, filename, limits or IntakeLimits())

    # 2. Separate the product from its background.
    try:
        background = remover.remove(normalised.image)
    except BackgroundRemovalError as error:
        raise BackgroundRemovalError(error.code, f"{filename}: {error.message}") from error

    # 3. Cut out at the normalised image's own size, so it lines up with the original pixel for pixel.
    #    Its PNG (the largest single encoding) and the mask's are made strip by strip, on the pool when there is one.
    cutout = cutout_rows(normalised.image, background.mask)
    cutout_encoding = encode_png_rows(normalised.image.size, "RGBA", cutout, pool)
    mask_encoding = encode_png_rows(background.mask.size, "L", image_rows(background.mask), pool)

    # 4. Compose the catalog packshot (the mask's parts, labelled once, frame it and feed the checks).
    parts = find_mask_parts(background.mask)
    packshot = compose_packshot(normalised.image, background.mask, packshot_settings, parts)

    # 5. Record what a reviewer should look at; nothing here changes the images.
    checks = quality_checks(background.mask, packshot_settings, parts)
    if background.low_confidence:
        reason = "; ".join(background.notes) or "the engine was unsure where the product ends"
        checks += (
            QualityFlag(
                code="low_confidence_cutout",
                severity=Severity.WARNING,
                message=f"The cutout may be wrong ({background.engine}, confidence "
                f"{background.confidence:.2f}): {reason}.",
            ),
        )
    return ProcessedPhoto(normalised, background, cutout_encoding, mask_encoding, packshot, checks)


def _on(pool: Executor | None, work: Callable[[], bytes]) -> Future[bytes]:
    """`work` submitted to the pool, or done now (as a finished future) without one."""
    if pool is not None:
        return pool.submit(work)
    done: Future[bytes] = Future()
    done.set_result(work())
    return done


@dataclass(frozen=True)
class PhotoToPrepare:
    """One photo and where it belongs: the same fields on both runtimes."""

    data: bytes
    image_id: str
    source: str  # relative input path locally, s3:// URI of the original on AWS
    filename: str
    sku: str
    publish_stem: str  # `<sku>/<photo>`, file-system and S3-key safe
    content_sha256: str
    sidecar: ProductSidecar | None
    kinds: tuple[JobKind, ...]


@dataclass(frozen=True)
class PrepareTargets:
    """Where prepare writes: `<files_prefix>cutout.png`..., previews, and the GPU jobs' output prefixes."""

    files_prefix: str
    previews_prefix: str
    jobs_prefix: str


@dataclass(frozen=True)
class PreparedPhoto:
    photo: ProcessedPhoto
    prepared: PreparedImage


def _preview(image: Image.Image, fmt: str) -> bytes:
    # `thumbnail` works in place: give it a second image over the same pixels (it swaps in its own, smaller
    # buffer) rather than a copy, which for a 24 MP cutout costs more than the thumbnail itself.
    image.load()
    thumb = image.convert("RGB") if fmt == "jpeg" and image.mode != "RGB" else image._new(image.im)
    thumb.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), reducing_gap=PREVIEW_REDUCING_GAP)
    return encode_image(thumb, fmt, quality=85)  # type: ignore[arg-type]


def _photo_previews(image: Image.Image, mask: Image.Image) -> tuple[bytes, bytes]:
    """The photo's preview (JPEG) and the cutout's (PNG), both made from one thumbnail of the photo and one of the
    mask: on a 24 MP photo, thumbnailing the full-size RGBA cutout as well cost twice the other two together."""
    image.load()
    thumb = image._new(image.im)
    thumb.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), reducing_gap=PREVIEW_REDUCING_GAP)
    small_mask = mask._new(mask.im)
    small_mask.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), reducing_gap=PREVIEW_REDUCING_GAP)  # the same size as thumb
    photo_preview = encode_image(thumb if thumb.mode == "RGB" else thumb.convert("RGB"), "jpeg", quality=85)
    return photo_preview, encode_image(make_cutout(thumb, small_mask), "png")


def _cutout_info(result: ProcessedPhoto) -> Cutout:
    info = result.normalised.info
    box = result.background.mask.getbbox()
    # The mask's sum by OpenCV: on a 24 MP mask Pillow's histogram takes 44 ms, the copy and the sum 7.
    coverage = cv2.sumElems(np.asarray(result.background.mask))[0] / (255 * info.width * info.height)
    return Cutout(
        engine=result.background.engine,
        confidence=round(result.background.confidence, 4),
        low_confidence=result.background.low_confidence,
        backdrop_rgb=result.background.backdrop_rgb,
        product_box=Box(left=box[0], top=box[1], right=box[2], bottom=box[3]) if box else None,
        coverage=round(min(1.0, coverage), 4),
    )


def prepare_image(
    photo: PhotoToPrepare,
    brand: BrandSelection,
    *,
    remover: BackgroundRemover,
    packshot_settings: PackshotSettings,
    limits: IntakeLimits,
    storage: BlobStorage,
    targets: PrepareTargets,
    reviewers: Sequence[str] = (),
) -> PreparedPhoto:
    """Run the CPU stages, write the derived files, and build the GPU job requests. Raises CatalogError."""
    threads = max(1, cv2.getNumThreads())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        # A second core for this photo: steps run side by side on the pool; one: each is done where it is asked for.
        on_pool = pool if threads > 1 else None

        # 1. The CPU stages, in memory.
        result = process_photo(photo.data, photo.source, remover, packshot_settings, limits, on_pool)

        # 2. The derived files, each under this photo's own prefix (never beside the original), encoded side by side
        #    (the cutout's and the mask's PNGs are under way already).
        fmt = packshot_settings.resolved_format
        packshot = result.packshot.image
        preview_format = "png" if packshot.mode == "RGBA" else "jpeg"
        pending: dict[str, tuple[str, Future[bytes], str]] = {
            "cutout": (f"{targets.files_prefix}cutout.png", result.cutout_png, "image/png"),
            "mask": (f"{targets.files_prefix}mask.png", result.mask_png, "image/png"),
            "packshot": (
                f"{targets.files_prefix}packshot{extension_for(fmt)}",
                _on(on_pool, partial(encode_image, packshot, fmt, quality=packshot_settings.quality)),
                content_type_for(fmt),
            ),
            "packshot_preview": (
                f"{targets.previews_prefix}packshot{extension_for(preview_format)}",  # type: ignore[arg-type]
                _on(on_pool, partial(_preview, packshot, preview_format)),
                content_type_for(preview_format),  # type: ignore[arg-type]
            ),
        }
        if JobKind.GHOST_MANNEQUIN in photo.kinds:
            # The ghost-mannequin job needs the photo with its mannequin, as intake normalised it (sRGB, upright).
            pending["normalised"] = (
                f"{targets.files_prefix}normalised.png",
                _on(on_pool, partial(encode_image, result.normalised.image, "png")),
                "image/png",
            )
        # Meanwhile, on this thread: the photo's and the cutout's previews, and the cutout's figures.
        original_preview, cutout_preview = _photo_previews(result.normalised.image, result.background.mask)
        cutout_info = _cutout_info(result)
        writes = {name: (uri, future.result(), content_type) for name, (uri, future, content_type) in pending.items()}
    writes["original_preview"] = (f"{targets.previews_prefix}original.jpg", original_preview, "image/jpeg")
    writes["cutout_preview"] = (f"{targets.previews_prefix}cutout.png", cutout_preview, "image/png")
    for uri, data, content_type in writes.values():
        storage.write_bytes(uri, data, content_type)
    files = PreparedFiles(
        cutout=writes["cutout"][0],
        mask=writes["mask"][0],
        packshot=writes["packshot"][0],
        normalised=writes["normalised"][0] if "normalised" in writes else None,
        original_preview=writes["original_preview"][0],
        cutout_preview=writes["cutout_preview"][0],
        packshot_preview=writes["packshot_preview"][0],
    )

    # 3. The GPU jobs this photo asks for, with the brand's profile.
    sku = photo.sidecar.sku if photo.sidecar and photo.sidecar.sku else photo.sku
    jobs = build_job_requests(
        image_id=photo.image_id,
        content_sha256=photo.content_sha256,
        brand=brand.resolved.brand,
        sku=sku,
        sidecar=photo.sidecar,
        kinds=photo.kinds,
        files=files,
        output_prefix=targets.jobs_prefix,
        profile=brand.profile,
    )
    prepared = PreparedImage(
        image_id=photo.image_id,
        brand=brand.resolved,
        sku=sku,
        source=photo.source,
        filename=photo.filename,
        publish_stem=photo.publish_stem,
        content_sha256=photo.content_sha256,
        intake=IntakeInfo.model_validate(result.normalised.info.model_dump()),
        cutout=cutout_info,
        checks=result.checks,
        files=files,
        reviewers=tuple(reviewers),
        jobs=jobs,
    )
    return PreparedPhoto(result, prepared)
