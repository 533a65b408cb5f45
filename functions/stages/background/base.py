"""The one interface both background engines implement, and the cutout they share."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from functions.encoding import image_rows


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
    return Image.fromarray(cutout_rows(image, mask)(0, image.height), "RGBA")


def cutout_rows(image: Image.Image, mask: Image.Image) -> Callable[[int, int], np.ndarray]:
    """`rows(top, bottom)`: those rows of `make_cutout(image, mask)` as an RGBA array, made on demand, so that a
    full-size cutout can be encoded strip by strip (on several cores) without ever being held whole."""
    if image.size != mask.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")
    if image.mode not in ("RGB", "RGBA"):
        raise ValueError(f"a cutout is made from an RGB or RGBA image, got mode {image.mode}")
    # Each strip is read from the images on its own: no full-size array is made up front (on 24 MP, 0.1 s).
    image_strip, mask_strip = image_rows(image), image_rows(mask)

    def rows(top: int, bottom: int) -> np.ndarray:
        pixels, alpha = image_strip(top, bottom), mask_strip(top, bottom)
        if image.mode == "RGBA":
            shown = pixels.copy()
            # round(own * mask / 255): OpenCV rounds to nearest, and a product of two bytes over 255 is never a half.
            alpha = cv2.multiply(shown[..., 3], alpha, scale=1 / 255)
        else:
            shown = cv2.cvtColor(pixels, cv2.COLOR_RGB2RGBA)
        shown[..., 3] = alpha
        cutout = np.zeros_like(shown)
        cv2.copyTo(shown, alpha, cutout)  # only where alpha is not 0: hidden pixels stay zero
        return cutout

    return rows
