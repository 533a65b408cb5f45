"""The one interface both background engines implement, and the cutout they share."""

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class BackgroundResult:
    """A product mask aligned pixel for pixel with the image it was computed from.

    `mask` is mode "L", the image's own size, 255 = product, 0 = background, soft in between.
    `notes` are sentences for the record, e.g. why confidence is low.
    """

    mask: Image.Image
    engine: str
    confidence: float
    low_confidence: bool
    backdrop_rgb: tuple[int, int, int] | None = None
    notes: tuple[str, ...] = ()


class BackgroundRemover(Protocol):
    """Separates the product from its background. Implementations are built once per process and reused."""

    @property
    def engine(self) -> str:
        """`backdrop` or `rembg:<model>`, recorded in every result."""
        ...

    def remove(self, image: Image.Image) -> BackgroundResult:
        """Mask for an 8-bit sRGB image in mode RGB or RGBA. Raises BackgroundRemovalError."""
        ...


def make_cutout(image: Image.Image, mask: Image.Image) -> Image.Image:
    """RGBA cutout at the image's own size: the image's colours, alpha = mask (times any existing alpha).

    Fully transparent pixels are zeroed: the backdrop's noise would otherwise be kept invisibly, making the PNG
    several times larger and slower to write.
    """
    if image.size != mask.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")
    alpha = np.asarray(mask, dtype=np.uint8)
    if image.mode == "RGBA":
        own = np.asarray(image.getchannel("A"), dtype=np.uint16)
        alpha = ((own * alpha + 127) // 255).astype(np.uint8)
    rgba = np.empty((*alpha.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.asarray(image.convert("RGB"))
    rgba[..., 3] = alpha
    rgba[alpha == 0] = 0
    return Image.fromarray(rgba, "RGBA")
