"""One product photo, in memory: intake -> background removal -> cutout -> packshot -> checks.

The same function serves `catalog run`, the prepare Lambda and the benchmark; it writes nothing.
"""

from dataclasses import dataclass

from PIL import Image

from schemas import QualityFlag, Severity

from .background import BackgroundRemover, BackgroundResult, make_cutout
from .errors import BackgroundRemovalError
from .intake import IntakeLimits, NormalisedImage, normalise_image
from .packshot import Packshot, PackshotSettings, compose_packshot, quality_checks


@dataclass(frozen=True)
class ProcessedPhoto:
    """Everything made from one photo, aligned with the normalised image (cutout and mask share its size)."""

    normalised: NormalisedImage
    background: BackgroundResult
    cutout: Image.Image
    packshot: Packshot
    checks: tuple[QualityFlag, ...]


def process_photo(
    data: bytes,
    filename: str,
    remover: BackgroundRemover,
    packshot_settings: PackshotSettings,
    limits: IntakeLimits | None = None,
) -> ProcessedPhoto:
    """Run the CPU stages on one photo's bytes. Raises IntakeError / BackgroundRemovalError naming `filename`."""
    # 1. Validate and normalise before any model sees the pixels.
    normalised = normalise_image(data, filename, limits or IntakeLimits())

    # 2. Separate the product from its background.
    try:
        background = remover.remove(normalised.image)
    except BackgroundRemovalError as error:
        raise BackgroundRemovalError(error.code, f"{filename}: {error.message}") from error

    # 3. Cut out at the normalised image's own size, so it lines up with the original pixel for pixel.
    cutout = make_cutout(normalised.image, background.mask)

    # 4. Compose the catalog packshot.
    packshot = compose_packshot(normalised.image, background.mask, packshot_settings)

    # 5. Record what a reviewer should look at; nothing here changes the images.
    checks = quality_checks(background.mask, packshot_settings)
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
    return ProcessedPhoto(normalised, background, cutout, packshot, checks)
