"""What processing one product photo produced."""

from enum import StrEnum

from pydantic import Field

from ._base import Contract
from .checks import QualityFlag


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ProcessingError(Contract):
    """A per-file refusal or failure: a stable code for machines, a sentence for people."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str


class Box(Contract):
    """A pixel rectangle, left/top inclusive, right/bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int


class Cutout(Contract):
    """How the product was separated from its background."""

    engine: str = Field(description="`backdrop` or `rembg:<model>`.")
    confidence: float = Field(ge=0.0, le=1.0)
    low_confidence: bool
    backdrop_rgb: tuple[int, int, int] | None = None
    product_box: Box | None = Field(default=None, description="Bounding box of the mask in the normalised image.")
    coverage: float = Field(ge=0.0, le=1.0, description="Share of the image the product mask covers.")


class IntakeInfo(Contract):
    """What intake found in the file and what it changed to normalise it."""

    detected_format: str
    width: int = Field(gt=0, description="Width after EXIF orientation.")
    height: int = Field(gt=0)
    mode: str = Field(description="Pillow mode after normalisation: RGB or RGBA.")
    notes: tuple[str, ...] = ()


class ProcessedImage(Contract):
    """One input photo and everything made from it. Paths are relative to the run's output folder."""

    source: str = Field(description="Path of the input file relative to the input folder.")
    sku: str
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    intake: IntakeInfo
    cutout: Cutout
    outputs: dict[str, str] = Field(description="Output kind (cutout, mask, packshot) -> relative path.")
    checks: tuple[QualityFlag, ...] = ()
