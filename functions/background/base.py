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
    """RGBA cutout at the image's own size: the image's colours, alpha = mask (times any existing alpha)."""
    if image.size != mask.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")
    rgb = image.convert("RGB")
    alpha = mask
    if image.mode == "RGBA":
        own = np.asarray(image.getchannel("A"), dtype=np.uint16)
        alpha = Image.fromarray(((own * np.asarray(mask, dtype=np.uint16) + 127) // 255).astype(np.uint8), "L")
    cutout = rgb.copy()
    cutout.putalpha(alpha)
    return cutout
