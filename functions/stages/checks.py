"""Automatic checks on one generated image: flags for the reviewer, never fixes.

Each recipe promises an invariant and writes into `JobOutput.details` the files that check it; this module reads
those files through a `ReadImage` port (file:// locally, s3:// on AWS) and checks the promise from them alone:
- lifestyle: inside `keep_mask_uri` every output pixel equals `placed_uri` (the product's own pixels);
- try-on: outside `agnostic_mask_uri` every output pixel equals `model_uri` (the model photo is untouched);
- ghost mannequin: outside `fill_mask_uri` every pixel is the input photo's (garment) or exactly the background;
- every output decodes as an image.
A check that cannot run (a detail missing, a file unreadable) says so with `invariant_not_checked`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from functions.stages.image_metrics import agree as _agree
from functions.stages.image_metrics import region_differences as _differences
from functions.stages.image_metrics import share_text as _share
from schemas import JobKind, JobOutput, QualityFlag, Severity

__all__ = ["ReadImage", "check_generated_output"]

ReadImage = Callable[[str], Image.Image]
"""A port: reads an image by URI (file:// locally, s3:// on AWS)."""

MASK_THRESHOLD = 128  # mask pixels at or above this are "in" the mask; the recipes write 0/255
_WHITE_RGBA = (255, 255, 255, 255)


def check_generated_output(
    kind: JobKind, output: JobOutput, read_image: ReadImage, tolerance: int = 2
) -> tuple[QualityFlag, ...]:
    """Flags for one generated image, from the files the recipe wrote (flags, never fixes)."""
    images = _Images(read_image)
    details = output.details
    flags: list[QualityFlag] = []
    decoded = images.get(output.uri)
    if isinstance(decoded, _Unreadable):
        flags.append(
            QualityFlag(
                code="unreadable_output",
                message=f"The generated image {_file_name(output.uri)} cannot be read ({decoded.reason}); "
                "the reviewer would see a broken image, so regenerate it.",
            )
        )
    elif kind == JobKind.LIFESTYLE:
        flags += _check_lifestyle(output.uri, details, images, tolerance)
    elif kind == JobKind.TRY_ON:
        flags += _check_try_on(output.uri, details, images, tolerance)
    elif kind == JobKind.GHOST_MANNEQUIN:
        flags += _check_ghost_mannequin(output.uri, details, images, tolerance)
    if details.get("note"):
        flags.append(QualityFlag(code="test_model", severity=Severity.INFO, message=str(details["note"])))
    return tuple(flags)


# ---- reading images once per call ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Unreadable:
    reason: str


class _Images:
    """Decodes each URI at most once per check; a failure is remembered as its reason, never raised."""

    def __init__(self, read_image: ReadImage) -> None:
        self._read_image = read_image
        self._decoded: dict[str, Image.Image | _Unreadable] = {}

    def get(self, uri: str) -> Image.Image | _Unreadable:
        if uri not in self._decoded:
            try:
                image = self._read_image(uri)
                image.load()  # a lazily opened image must fail here (truncated data), not in a later conversion
                self._decoded[uri] = image
            # The port is runtime-specific (FileNotFoundError, botocore errors, storage errors) and Pillow's decoders
            # raise OSError, ValueError, SyntaxError, EOFError, DecompressionBombError...: any of them means the file
            # cannot be used, which is a flag for the reviewer, not a crash of the whole batch.
            except Exception as error:
                self._decoded[uri] = _Unreadable(_reason(error))
        return self._decoded[uri]

    def pixels(self, uri: str, mode: str) -> np.ndarray | _Unreadable:
        """The image as an array in `mode` ("RGB", "RGBA", "L"), or why it cannot be had."""
        decoded = self.get(uri)
        if isinstance(decoded, _Unreadable):
            return decoded
        try:
            return np.asarray(decoded.convert(mode))
        except Exception as error:  # an exotic mode Pillow cannot convert is as unusable as an undecodable file
            return _Unreadable(_reason(error))

    def mask(self, uri: str) -> np.ndarray | _Unreadable:
        pixels = self.pixels(uri, "L")
        return pixels if isinstance(pixels, _Unreadable) else pixels >= MASK_THRESHOLD

    def ghost_input_rgb(self, uri: str) -> np.ndarray | _Unreadable:
        """The ghost-mannequin input as the recipe saw it: 8-bit RGB, a transparent background flattened on white."""
        decoded = self.get(uri)
        if isinstance(decoded, _Unreadable):
            return decoded
        try:
            # Same steps as gpu_jobs.recipes.ghost_mannequin._read_rgb (functions never imports gpu_jobs), so the
            # garment pixels compare bit for bit with what the recipe composed.
            image = decoded
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                flat = Image.new("RGBA", image.size, _WHITE_RGBA)
                flat.alpha_composite(image.convert("RGBA"))
                image = flat
            return np.asarray(image.convert("RGB"))
        except Exception as error:
            return _Unreadable(_reason(error))


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):  # its text is "cannot identify image file <_io.BytesIO at 0x...>"
        return "UnidentifiedImageError: not an image in a format that can be decoded"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _file_name(uri: str) -> str:
    return PurePosixPath(urlparse(uri).path).name or uri


# ---- what each check needs from the details ------------------------------------------------------------------------
class _CheckCannotRunError(Exception):
    """The check cannot run; the message completes "The <check> did not run: ..."."""


def _uri_details(details: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    missing = [name for name in names if not isinstance(details.get(name), str) or not details[name]]
    if missing:
        raise _CheckCannotRunError(f"the job's details lack {' and '.join(missing)}")
    return {name: details[name] for name in names}


def _load(value: np.ndarray | _Unreadable, uri: str, detail: str) -> np.ndarray:
    if isinstance(value, _Unreadable):
        raise _CheckCannotRunError(f"{_file_name(uri)} ({detail}) cannot be read ({value.reason})")
    return value


def _not_checked(check: str, reason: _CheckCannotRunError) -> QualityFlag:
    return QualityFlag(
        code="invariant_not_checked",
        message=f"The {check} did not run: {reason}; check this image by eye.",
    )


def _size_mismatch(code: str, output_uri: str, arrays: dict[str, np.ndarray]) -> QualityFlag | None:
    """A flag when the output and the files that check it are not all the same size (the promise cannot hold)."""
    sizes = {name: (array.shape[1], array.shape[0]) for name, array in arrays.items()}
    if len(set(sizes.values())) == 1:
        return None
    described = ", ".join(f"{name} is {width}x{height}" for name, (width, height) in sizes.items())
    return QualityFlag(
        code=code,
        message=f"The generated image {_file_name(output_uri)} cannot match the files it is checked against: "
        f"{described}; the sizes must be equal, so regenerate it.",
    )


# ---- the recipes' invariants -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PreservedRegion:
    """A recipe's promise that the output equals a reference image inside (or outside) a mask."""

    check: str  # what the reviewer is told did not run
    code: str
    reference_key: str
    mask_key: str
    inside: bool  # True: inside the mask must be kept; False: outside it
    pixels: str  # how the message counts the changed pixels
    advice: str  # what the change means, and what to do


_PRODUCT_PIXELS = _PreservedRegion(
    check="product-pixel check",
    code="product_pixels_changed",
    reference_key="placed_uri",
    mask_key="keep_mask_uri",
    inside=True,
    pixels="kept product pixels",
    advice="The product's own pixels changed: {found}; the product must look exactly as photographed, so reject or "
    "regenerate it.",
)
_MODEL_PHOTO = _PreservedRegion(
    check="model-photo check",
    code="model_photo_changed",
    reference_key="model_uri",
    mask_key="agnostic_mask_uri",
    inside=False,
    pixels="pixels",
    advice="The model photo changed outside the garment area: {found}; only the garment may change, so check the "
    "face, hands and background and reject it if they differ.",
)


def _check_preserved(
    rule: _PreservedRegion, uri: str, details: dict[str, Any], images: _Images, tolerance: int
) -> list[QualityFlag]:
    try:
        files = _uri_details(details, (rule.mask_key, rule.reference_key))
        output = _load(images.pixels(uri, "RGB"), uri, "the output")
        mask_uri, reference_uri = files[rule.mask_key], files[rule.reference_key]
        mask = _load(images.mask(mask_uri), mask_uri, rule.mask_key)
        reference = _load(images.pixels(reference_uri, "RGB"), reference_uri, rule.reference_key)
    except _CheckCannotRunError as reason:
        return [_not_checked(rule.check, reason)]
    reference_name, mask_name = _file_name(reference_uri), _file_name(mask_uri)
    mismatch = _size_mismatch(rule.code, uri, {_file_name(uri): output, reference_name: reference, mask_name: mask})
    if mismatch is not None:
        return [mismatch]
    found = _differences(output, reference, mask if rule.inside else ~mask, tolerance)
    if found is None:
        return []
    return [QualityFlag(code=rule.code, message=rule.advice.format(found=found.describe(rule.pixels, reference_name)))]


def _check_lifestyle(uri: str, details: dict[str, Any], images: _Images, tolerance: int) -> list[QualityFlag]:
    # img2img and text2img place no product, so there are no product pixels to keep: nothing to check.
    if details.get("mode", "inpaint") != "inpaint":
        return []
    return _check_preserved(_PRODUCT_PIXELS, uri, details, images, tolerance)


def _check_try_on(uri: str, details: dict[str, Any], images: _Images, tolerance: int) -> list[QualityFlag]:
    return _check_preserved(_MODEL_PHOTO, uri, details, images, tolerance)


def _check_ghost_mannequin(uri: str, details: dict[str, Any], images: _Images, tolerance: int) -> list[QualityFlag]:
    # The rule is strict on purpose: compose_ghost uses hard masks (no feathering, no anti-aliased seam), so every
    # pixel outside the fill region is either the input's garment pixel (opaque) or exactly the background value.
    # Allowing "a blend of garment and background at the mask's edge" would only hide a real halo or a repainted
    # edge; should the recipe ever feather its seam, this check (and its tests on the real recipe) must change with it.
    try:
        files = _uri_details(details, ("input_uri", "fill_mask_uri", "garment_mask_uri"))
        background = _background_value(details.get("background_value"))
        output = _load(images.pixels(uri, "RGBA"), uri, "the output")
        photo = _load(images.ghost_input_rgb(files["input_uri"]), files["input_uri"], "input_uri")
        fill = _load(images.mask(files["fill_mask_uri"]), files["fill_mask_uri"], "fill_mask_uri")
        garment = _load(images.mask(files["garment_mask_uri"]), files["garment_mask_uri"], "garment_mask_uri")
    except _CheckCannotRunError as reason:
        return [_not_checked("ghost-mannequin check", reason)]
    sizes_to_match = {
        _file_name(uri): output,
        _file_name(files["input_uri"]): photo,
        _file_name(files["fill_mask_uri"]): fill,
        _file_name(files["garment_mask_uri"]): garment,
    }
    mismatch = _size_mismatch("ghost_pixels_changed", uri, sizes_to_match)
    if mismatch is not None:
        return [mismatch]
    # Compared as RGBA so one rule covers both backgrounds: an opaque garment, and white or fully transparent around
    # it (an RGB output reads as alpha 255, so a white background is (255, 255, 255, 255)).
    expected = np.empty_like(output)
    expected[...] = background
    expected[garment, :3] = photo[garment]
    expected[garment, 3] = 255
    outside = ~fill
    changed_garment = _differences(output, expected, outside & garment, tolerance)
    changed_background = _differences(output, expected, outside & ~garment, 0)  # the background is exact, no slack
    if changed_garment is None and changed_background is None:
        return []
    found = [part for part in (changed_garment, changed_background) if part is not None]
    worst = max(found, key=lambda part: part.largest)
    changed = sum(part.changed for part in found)
    checked = int(outside.sum())
    parts = []
    if changed_garment is not None:
        count = changed_garment.changed
        parts.append(
            f"{count} garment {_agree(count, 'pixel differs', 'pixels differ')} from {_file_name(files['input_uri'])}"
        )
    if changed_background is not None:
        count = changed_background.changed
        parts.append(
            f"{count} background {_agree(count, 'pixel is', 'pixels are')} not exactly {_background_words(background)}"
        )
    return [
        QualityFlag(
            code="ghost_pixels_changed",
            message=f"Outside the filled region {changed} of {checked} pixels ({_share(changed, checked)}) "
            f"{_agree(changed, 'is', 'are')} neither the garment as photographed nor the background: "
            f"{' and '.join(parts)}, by up to {worst.largest} levels (the largest at x={worst.at[0]}, y={worst.at[1]});"
            " check the garment's edges and the background, and regenerate it if they look wrong.",
        )
    ]


def _background_value(value: Any) -> tuple[int, int, int, int]:
    """The recipe's background as RGBA: (255, 255, 255) is opaque white, (0, 0, 0, 0) is transparent."""
    if (
        not isinstance(value, list | tuple)
        or len(value) not in (3, 4)
        or not all(isinstance(channel, int) and 0 <= channel <= 255 for channel in value)
    ):
        raise _CheckCannotRunError(f"the job's details lack a valid background_value (got {value!r})")
    red, green, blue, *alpha = value
    return red, green, blue, alpha[0] if alpha else 255


def _background_words(background: tuple[int, int, int, int]) -> str:
    if background == _WHITE_RGBA:
        return "white"
    if background[3] == 0:
        return "transparent"
    return f"the background {background}"
