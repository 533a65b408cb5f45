"""The one interface both background engines implement, and the cutout they share."""

from dataclasses import dataclass
from typing import Protocol

import cv2
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
    alpha = mask
    if image.mode == "RGBA":
        # round(own * mask / 255): OpenCV rounds to nearest, and a product of two bytes over 255 is never a half.
        own = np.asarray(image.getchannel("A"))
        alpha = Image.fromarray(cv2.multiply(own, np.asarray(mask), scale=1 / 255), "L")
    # Pillow's own band operations, without array copies: a 24 MP cutout is made in a fraction of the time.
    rgba = image.convert("RGBA") if image.mode != "RGBA" else image.copy()
    rgba.putalpha(alpha)
    # A bilevel ("1") paste mask fills or leaves each pixel; an "L" one would blend every pixel (twice the time).
    rgba.paste((0, 0, 0, 0), None, alpha.point(_HIDDEN, "1"))
    return rgba


# Alpha 0 -> set (zeroed), anything else -> clear (kept as is).
_HIDDEN = [255] + [0] * 255
