"""Curate a brand's training photos: quality gates, duplicates, aspect buckets, captions, and the dataset folder.

Each photo goes through the same intake as `catalog run` (`normalise_image`) and the same background engine (the
product mask), then the gates: resolution (never counting upscaling), sharpness, exposure, product coverage, and
duplicates by perceptual hash. Kept photos are written as `DS/images/<id>.png` with their caption beside them and
their mask under `DS/masks/`; `DS/dataset.json` records every photo's verdict. The folder is built aside and swapped
in whole, so a check that is killed leaves the previous dataset as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import shutil
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.errors import CatalogError, ConfigurationError
from functions.stages.background import BackgroundRemover
from functions.stages.intake import IntakeLimits, normalise_image
from functions.stages.publish import safe_name
from schemas import GarmentCategory, ProductSidecar
from schemas.dataset import (
    DatasetManifest,
    DatasetPhoto,
    FailureCase,
    GateFinding,
    PhotoOrigin,
    PhotoVerdict,
    dataset_digest,
)

if TYPE_CHECKING:
    import imagehash

DATASET_FILE = "dataset.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
THUMBS_DIR = "thumbs"
REPORT_FILE = "report.html"

DEFAULT_CAPTION_TEMPLATE = "{trigger_token}, {title}, {colour} {category}, {collection} collection"
CAPTION_FIELDS = ("trigger_token", "title", "category", "colour", "collection", "sku")


class DatasetGates(BaseModel):
    """The thresholds of the quality gates; every one has a default and most can be set from the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_side: int = Field(default=1024, ge=64, description="Shorter side (px) a photo must have as shot; SDXL: 1024.")
    bucket_resolution: int = Field(default=1024, ge=256, description="Training buckets hold about this squared.")
    min_sharpness: float = Field(
        default=10.0,
        ge=0,
        description="Variance of the Laplacian on the product at 512 px short side, in % of its gradient energy.",
    )
    dark_luma: float = Field(
        default=0.35, description="The frame's brightest 1% (0-1 brightness) below this: under-exposed."
    )
    light_luma: float = Field(
        default=0.95, description="The product's darkest 5% (0-1 brightness) above this: over-exposed, washed out."
    )
    max_clipped_share: float = Field(
        default=0.3, description="Share of the product at pure black or white above this: its detail is lost."
    )
    duplicate_distance: int = Field(default=6, ge=0, le=64, description="pHash Hamming distance of a near duplicate.")
    duplicate_colour_de: float = Field(
        default=8.0,
        ge=0,
        description="...and its colours this close (mean CIELAB ΔE on an 8x8 grid): the same shirt in another colour "
        "has the same pHash (it is computed on grey) but is a different training photo.",
    )
    min_product_share: float = Field(default=0.05, description="Product area as a share of the frame, at least.")
    max_edge_contact: float = Field(
        default=0.04, description="Share of one frame edge the product may touch before it counts as cut off."
    )
    warn_below: int = Field(default=10, ge=1, description="Fewer kept photos than this: a warning.")
    refuse_below: int = Field(default=5, ge=1, description="Fewer kept photos than this: the dataset is refused.")


@dataclass(frozen=True)
class CandidatePhoto:
    """One input the check looks at: a photo from the folder, or an approved generated image when opted in."""

    path: Path
    source: str
    sku: str
    sidecar: ProductSidecar | None = None
    sidecar_error: str | None = None
    origin: PhotoOrigin = PhotoOrigin.PHOTO


class DatasetRefusedError(CatalogError):
    """The check cannot write a dataset (too few kept photos, an unreadable caption); nothing was changed."""


Captioner = Callable[[Image.Image], str]


# -- one photo ---------------------------------------------------------------------------------------------------


@dataclass
class AssessedPhoto:
    candidate: CandidatePhoto
    id: str
    findings: list[GateFinding] = field(default_factory=list)
    image: Image.Image | None = None
    mask: Image.Image | None = None
    sha256: str | None = None
    pixels_sha256: str | None = None
    phash: imagehash.ImageHash | None = None
    colours: np.ndarray | None = None  # CIELAB on an 8x8 grid: what pHash, computed on grey, cannot see
    sharpness: float = 0.0
    duplicate_group: str | None = None
    width: int | None = None
    height: int | None = None
    has_mask: bool = False
    described: str | None = None  # what the captioning model saw, when one is configured

    def release_pixels(self) -> None:
        """Drop the image and mask once they are written: a 24 MP photo is 72 MB in memory, and a set holds dozens."""
        self.image = None
        self.mask = None

    @property
    def refused(self) -> bool:
        return any(finding.refuses for finding in self.findings)

    def add(self, code: str, message: str, refuses: bool = True) -> None:
        self.findings.append(GateFinding(code=code, message=message, refuses=refuses))


def _grey_at_working_size(image: Image.Image, mask: Image.Image | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey (0-255 float) and mask at 512 px on the shorter side (never enlarged): measures that do not depend on
    how many pixels the camera had."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    product = None if mask is None else np.asarray(mask, dtype=np.uint8)
    scale = 512 / min(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        grey = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
        if product is not None:
            product = np.asarray(cv2.resize(product, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return grey, product


def measure_sharpness(image: Image.Image, mask: Image.Image | None = None) -> float:
    """Variance of the Laplacian over the product (and a few pixels round it), at a fixed working size, as a
    percentage of the mean squared gradient there.

    The working size makes it independent of the camera's pixel count; dividing by the gradient energy makes it
    independent of contrast, so a white shirt on a white sweep is not called blurry for being pale. Measured on
    rendered and real studio photos at 768x1024: sharp ones 26-98, the same blurred with a 2.5 px Gaussian 4.5-6.6.
    """
    grey, product = _grey_at_working_size(image, mask)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    grad_x = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    grad_y = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    region = np.ones(grey.shape, bool)
    if product is not None and np.count_nonzero(product > 127) >= 64:
        region = cv2.dilate((product > 127).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    gradient_energy = float((grad_x[region] ** 2 + grad_y[region] ** 2).mean())
    if gradient_energy < 1e-6:
        return 0.0  # a flat picture has no detail at all
    return 100.0 * float(laplacian[region].var()) / gradient_energy


@dataclass(frozen=True)
class Exposure:
    frame_bright: float  # 99th percentile brightness (0-1) of the whole frame
    product_dark: float  # 5th percentile brightness of the product
    product_white: float  # share of the product at pure white
    product_black: float  # share of the product at pure black


def measure_exposure(image: Image.Image, mask: Image.Image | None = None) -> Exposure:
    """Brightness percentiles of the frame and the product, and how much of the product is clipped.

    Percentiles, not means: a navy garment on a grey sweep is dark on average and well exposed.
    """
    rgb = np.asarray(image.convert("RGB"))
    luma = rgb.astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32) / 255.0
    product = np.ones(luma.shape, bool)
    if mask is not None and np.count_nonzero(np.asarray(mask) > 127) >= 64:
        product = np.asarray(mask) > 127
    return Exposure(
        frame_bright=float(np.percentile(luma, 99)),
        product_dark=float(np.percentile(luma[product], 5)),
        product_white=float(np.all(rgb[product] >= 254, axis=1).mean()),
        product_black=float(np.all(rgb[product] <= 1, axis=1).mean()),
    )


def measure_coverage(mask: Image.Image) -> tuple[float, float]:
    """The product's share of the frame, and the largest share of any one frame edge it touches."""
    product = np.asarray(mask) > 127
    edges = (product[0, :], product[-1, :], product[:, 0], product[:, -1])
    return float(product.mean()), max(float(edge.mean()) for edge in edges)


def require_imagehash() -> None:
    """The perceptual hash comes from the `train` extra; say how to install it rather than fail on an import."""
    try:
        import imagehash  # noqa: F401
    except ImportError as error:
        raise ConfigurationError(
            "the dataset check needs imagehash for its duplicate gate: pip install -e '.[train]'."
        ) from error


def assess_photo(
    candidate: CandidatePhoto,
    photo_id: str,
    gates: DatasetGates,
    remover: BackgroundRemover,
    limits: IntakeLimits,
) -> AssessedPhoto:
    """Intake, mask and the single-photo gates. Every finding names the file."""
    import imagehash

    photo = AssessedPhoto(candidate, photo_id)
    name = candidate.source
    if candidate.sidecar_error:
        photo.add("invalid_sidecar", candidate.sidecar_error)
        return photo

    # 1. the same intake as `catalog run`
    try:
        data = candidate.path.read_bytes()
    except OSError as error:
        photo.add("unreadable", f"{name} cannot be read: {error.strerror or error}.")
        return photo
    photo.sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = normalise_image(data, name, limits).image
    except CatalogError as error:
        photo.add(error.code, error.message)
        return photo
    photo.image = image
    photo.width, photo.height = image.size
    photo.pixels_sha256 = hashlib.sha256(image.tobytes()).hexdigest()
    photo.phash = imagehash.phash(image.convert("RGB"))
    photo.colours = colour_grid(image)

    # 2. resolution as shot: intake never enlarges, and neither does anything here
    short = min(image.size)
    if short < gates.min_side:
        photo.add(
            "too_small",
            f"{name} is {image.width}x{image.height}: its shorter side ({short} px) is under the {gates.min_side} px "
            "the dataset needs (upscaling does not count); use a larger original.",
        )

    # 3. the product mask, from the same background engine as `catalog run`
    try:
        result = remover.remove(image)
        photo.mask = result.mask
        photo.has_mask = True
    except CatalogError as error:
        photo.add("no_product", f"{name}: {error.message}.")

    # 4. exposure, sharpness and coverage on the product (with no product found, only darkness can explain it)
    exposure = measure_exposure(image, photo.mask)
    if exposure.frame_bright < gates.dark_luma:
        photo.add(
            "too_dark",
            f"{name} is too dark: even its brightest parts reach only {exposure.frame_bright:.0%} brightness; "
            "re-expose it.",
        )
    elif exposure.product_black > gates.max_clipped_share and photo.mask is not None:
        photo.add(
            "too_dark",
            f"{name} is too dark: {exposure.product_black:.0%} of the product is pure black, so its detail is lost; "
            "re-expose it.",
        )
    if photo.mask is None:
        return photo
    if exposure.product_white > gates.max_clipped_share:
        photo.add(
            "too_light",
            f"{name} is too light: {exposure.product_white:.0%} of the product is pure white, so its detail is lost; "
            "re-expose it.",
        )
    elif exposure.product_dark > gates.light_luma:
        photo.add(
            "too_light",
            f"{name} is too light: even the product's darkest parts are at {exposure.product_dark:.0%} brightness, "
            "so it looks washed out; re-expose it.",
        )
    photo.sharpness = measure_sharpness(image, photo.mask)
    if photo.sharpness < gates.min_sharpness:
        photo.add(
            "blurry",
            f"{name} is blurry: sharpness {photo.sharpness:.1f} is under {gates.min_sharpness:g} "
            "(variance of the Laplacian on the product, relative to its contrast); use a sharper shot.",
        )
    share, contact = measure_coverage(photo.mask)
    if share < gates.min_product_share:
        photo.add(
            "product_too_small",
            f"{name}: the product fills {share:.1%} of the frame, under {gates.min_product_share:.0%}; "
            "crop closer or shoot it larger.",
        )
    if contact > gates.max_edge_contact:
        photo.add(
            "product_cut_by_frame",
            f"{name}: the product runs into the frame edge ({contact:.0%} of one edge), so part of it is cut "
            "off; use a shot with the whole product in frame.",
        )
    return photo


# -- the set of photos -------------------------------------------------------------------------------------------


def photo_ids(candidates: Sequence[CandidatePhoto]) -> list[str]:
    """Stable ids from the source paths (the same photo keeps its id and caption file across runs)."""
    ids: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        stem = PurePosixPath(candidate.source).with_suffix("").as_posix().replace("/", "__")
        base = safe_name(stem)[:120]
        photo_id, n = base, 2
        while photo_id.lower() in seen:
            photo_id, n = f"{base}-{n}", n + 1
        seen.add(photo_id.lower())
        ids.append(photo_id)
    return ids


def _quality_rank(photo: AssessedPhoto) -> tuple[int, int, float]:
    """Which of a duplicate group is kept: a photo that passes its gates, then the larger, then the sharper."""
    return (0 if photo.refused else 1, (photo.width or 0) * (photo.height or 0), photo.sharpness)


def colour_grid(image: Image.Image) -> np.ndarray:
    """The picture's colours on an 8x8 grid, in CIELAB (so distances are ΔE)."""
    small = np.asarray(image.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return np.asarray(cv2.cvtColor(small, cv2.COLOR_RGB2Lab), dtype=np.float32)


def colour_difference(first: AssessedPhoto, second: AssessedPhoto) -> float:
    """Mean ΔE between two photos' colour grids."""
    assert first.colours is not None and second.colours is not None
    return float(np.linalg.norm(first.colours - second.colours, axis=2).mean())


def mark_duplicates(
    photos: Sequence[AssessedPhoto], max_distance: int, max_colour_de: float = 8.0
) -> list[list[AssessedPhoto]]:
    """Group exact (same pixels) and near duplicates (pHash within `max_distance` and colours within
    `max_colour_de`); keep the best of each group."""
    decoded = [photo for photo in photos if photo.phash is not None]
    parent = list(range(len(decoded)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, first in enumerate(decoded):
        for j in range(i + 1, len(decoded)):
            second = decoded[j]
            assert first.phash is not None and second.phash is not None
            near = first.phash - second.phash <= max_distance and colour_difference(first, second) <= max_colour_de
            if first.pixels_sha256 == second.pixels_sha256 or near:
                parent[root(j)] = root(i)

    groups: dict[int, list[AssessedPhoto]] = {}
    for i, photo in enumerate(decoded):
        groups.setdefault(root(i), []).append(photo)
    duplicate_groups = [group for group in groups.values() if len(group) > 1]
    for number, group in enumerate(duplicate_groups, start=1):
        best = max(group, key=_quality_rank)
        for photo in group:
            photo.duplicate_group = f"dup-{number}"
            if photo is best:
                continue
            exact = photo.pixels_sha256 == best.pixels_sha256
            assert photo.phash is not None and best.phash is not None
            kind = (
                "an exact duplicate"
                if exact
                else f"a near duplicate (pHash distance {photo.phash - best.phash}, colour ΔE "
                f"{colour_difference(photo, best):.1f})"
            )
            photo.add(
                "exact_duplicate" if exact else "near_duplicate",
                f"{photo.candidate.source} is {kind} of {best.candidate.source}, which is kept instead.",
            )
    return duplicate_groups


def plan_bucket(width: int, height: int, resolution: int = 1024) -> tuple[int, int]:
    """The training size (multiples of 64, about `resolution` squared) whose aspect is nearest the photo's.

    A photo too small for that bucket gets the same aspect scaled down to fit: training never enlarges a photo.
    """
    step = 64
    area = resolution * resolution
    buckets = []
    for bucket_w in range(resolution // 2, resolution * 2 + 1, step):
        bucket_h = (area // bucket_w) // step * step
        if bucket_h >= step and 0.5 <= bucket_w / bucket_h <= 2.0:
            buckets.append((bucket_w, bucket_h))
    aspect = math.log(width / height)
    bucket_w, bucket_h = min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))
    scale = min(1.0, width / bucket_w, height / bucket_h)
    if scale < 1.0:
        bucket_w = max(step, int(bucket_w * scale) // step * step)
        bucket_h = max(step, int(bucket_h * scale) // step * step)
    return bucket_w, bucket_h


# -- captions ----------------------------------------------------------------------------------------------------


def check_caption_template(template: str) -> None:
    """Raise ConfigurationError naming any placeholder the template may not use."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigurationError(f"--caption-template {template!r} is not a valid template: {error}.") from error
    unknown = sorted({name for name in names if name not in CAPTION_FIELDS})
    if unknown:
        raise ConfigurationError(
            f"--caption-template uses {', '.join(unknown)}; the fields are {', '.join(CAPTION_FIELDS)}."
        )


def render_caption(template: str, sku: str, sidecar: ProductSidecar | None, trigger_token: str | None) -> str:
    """The template filled from the sidecar; the parts whose fields are missing are dropped, not left empty."""
    category = sidecar.category if sidecar else GarmentCategory.OTHER
    values = {
        "trigger_token": trigger_token or "",
        "title": (sidecar.title if sidecar else None) or "",
        "category": "" if category is GarmentCategory.OTHER else category.value,
        "colour": (sidecar.colour if sidecar else None) or "",
        "collection": (sidecar.collection if sidecar else None) or "",
        "sku": sku,
    }
    parts = []
    for part in template.split(","):
        names = [name for _, name, _, _ in string.Formatter().parse(part) if name]
        if names and not any(values[name] for name in names):
            continue  # e.g. ", {collection} collection" with no collection
        text = " ".join(part.format(**values).split())
        if text:
            parts.append(text)
    return ", ".join(parts)


def with_description(caption: str, described: str) -> str:
    """The template's caption, then what a captioning model saw (on one line, without its stray spaces)."""
    return ", ".join(part for part in (caption, " ".join(described.split())) if part)


def read_caption_file(path: Path) -> str:
    """A caption `.txt` the user may have edited: UTF-8 (a BOM is fine), or a DatasetRefusedError naming the file."""
    try:
        return path.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise DatasetRefusedError(
            "caption_encoding",
            f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8 and run the check again. "
            "Nothing was changed.",
        ) from error


@dataclass(frozen=True)
class PreviousDataset:
    """What the last check wrote, to keep the user's caption edits."""

    folder: Path
    manifest: DatasetManifest | None

    @classmethod
    def read(cls, folder: Path) -> PreviousDataset:
        path = folder / DATASET_FILE
        if not path.is_file():
            return cls(folder, None)
        try:
            return cls(folder, DatasetManifest.model_validate_json(path.read_bytes()))
        except ValidationError as error:
            raise DatasetRefusedError(
                "invalid_dataset",
                f"{path} is not a dataset this tool wrote ({error.error_count()} problems); move it away and run the "
                "check again. Nothing was changed.",
            ) from error

    def edited_caption(self, photo_id: str) -> str | None:
        """The user's own caption for this photo, if they edited the file we wrote (or an earlier edit stands)."""
        if self.manifest is None:
            return None
        before = next((p for p in self.manifest.photos if p.id == photo_id and p.caption_file), None)
        if before is None or before.caption_file is None:
            return None
        path = self.folder / before.caption_file
        if not path.is_file():
            return None
        text = read_caption_file(path)
        if before.caption_edited or text != (before.caption or ""):
            return text
        return None

    def edited_captions(self) -> dict[str, str]:
        """Every edited caption by photo id; read before any work, so a file in a bad encoding stops the check early."""
        if self.manifest is None:
            return {}
        edits = {photo.id: self.edited_caption(photo.id) for photo in self.manifest.kept}
        return {photo_id: text for photo_id, text in edits.items() if text is not None}


# -- the whole check ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetCheck:
    """What `check_dataset` decided: the manifest (written only when `written`), and the duplicate groups."""

    manifest: DatasetManifest
    duplicate_groups: tuple[tuple[str, ...], ...]
    written: bool
    refusal: str | None = None


@dataclass(frozen=True)
class CheckOptions:
    brand: str
    gates: DatasetGates = field(default_factory=DatasetGates)
    trigger_token: str | None = None
    caption_template: str = DEFAULT_CAPTION_TEMPLATE
    limits: IntakeLimits = field(default_factory=IntakeLimits)


def check_dataset(
    candidates: Sequence[CandidatePhoto],
    out_dir: Path,
    options: CheckOptions,
    remover: BackgroundRemover,
    *,
    failure_cases: Iterable[FailureCase] = (),
    captioner: Captioner | None = None,
    warnings: Iterable[str] = (),
    on_assessed: Callable[[AssessedPhoto], None] | None = None,
    write_report: Callable[[DatasetManifest, Path], object] | None = None,
) -> DatasetCheck:
    """Run every gate over the candidates and, unless refused, replace `out_dir` with the new dataset in one swap."""
    gates = options.gates
    check_caption_template(options.caption_template)
    require_imagehash()
    out_dir = out_dir.absolute()
    parent_was_there = out_dir.parent.is_dir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(out_dir)
    edits = PreviousDataset.read(out_dir).edited_captions()
    staging = _fresh_staging(out_dir)
    try:
        # 1. every photo through intake, mask and the single-photo gates; its files are staged as it goes
        assessed = []
        for candidate, photo_id in zip(candidates, photo_ids(candidates), strict=True):
            photo = assess_photo(candidate, photo_id, gates, remover, options.limits)
            _stage_photo(photo, staging, None if photo_id in edits else captioner)
            assessed.append(photo)
            if on_assessed:
                on_assessed(photo)

        # 2. duplicates across the set, then buckets and captions for what is kept
        groups = mark_duplicates(assessed, gates.duplicate_distance, gates.duplicate_colour_de)
        photos = [_dataset_photo(photo, options, edits.get(photo.id)) for photo in assessed]

        # 3. the count gate
        kept = [p for p in photos if p.verdict is PhotoVerdict.KEPT]
        notes = list(warnings)
        refusal = None
        if len(kept) < gates.refuse_below:
            refusal = (
                f"only {len(kept)} of {len(photos)} photos passed the gates; a dataset needs at least "
                f"{gates.refuse_below}. Nothing was written; the reasons are listed per photo."
            )
        elif len(kept) < gates.warn_below:
            notes.append(f"only {len(kept)} photos kept; {gates.warn_below} or more train a more faithful adapter.")
        buckets: dict[str, int] = {}
        for photo_record in kept:
            assert photo_record.bucket is not None
            key = f"{photo_record.bucket[0]}x{photo_record.bucket[1]}"
            buckets[key] = buckets.get(key, 0) + 1

        manifest = DatasetManifest(
            brand=options.brand,
            trigger_token=options.trigger_token,
            created_at=datetime.now(UTC),
            min_side=gates.min_side,
            photos=tuple(photos),
            buckets=dict(sorted(buckets.items())),
            failure_cases=tuple(failure_cases),
            warnings=tuple(notes),
        )
        duplicate_ids = tuple(tuple(p.id for p in group) for group in groups)
        if refusal is not None:
            shutil.rmtree(staging)
            if not parent_was_there:
                with contextlib.suppress(OSError):
                    out_dir.parent.rmdir()
            return DatasetCheck(manifest, duplicate_ids, written=False, refusal=refusal)

        # 4. captions and dataset.json into the staged folder, then swap it in whole
        manifest = _finish_dataset(staging, manifest, write_report)
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DatasetCheck(manifest, duplicate_ids, written=True)


def _fresh_staging(out_dir: Path) -> Path:
    """The folder the new dataset is built in: beside `out_dir` (same file system, so the swap is a rename)."""
    staging = out_dir.parent / f".{out_dir.name}.check-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    for folder in (IMAGES_DIR, MASKS_DIR, THUMBS_DIR):
        (staging / folder).mkdir(parents=True)
    return staging


def _stage_photo(photo: AssessedPhoto, staging: Path, captioner: Captioner | None) -> None:
    """Write what the photo contributes (thumbnail; image and mask while it passes), then let its pixels go."""
    if photo.image is not None:
        (staging / THUMBS_DIR / f"{photo.id}.jpg").write_bytes(_thumbnail(photo.image))
        if not photo.refused and photo.mask is not None:
            (staging / IMAGES_DIR / f"{photo.id}.png").write_bytes(_png(photo.image))
            (staging / MASKS_DIR / f"{photo.id}.png").write_bytes(_png(photo.mask))
            if captioner is not None:
                photo.described = captioner(photo.image.convert("RGB"))
    photo.release_pixels()


def _dataset_photo(photo: AssessedPhoto, options: CheckOptions, edited: str | None) -> DatasetPhoto:
    candidate = photo.candidate
    common = {
        "id": photo.id,
        "source": candidate.source,
        "origin": candidate.origin,
        "findings": tuple(photo.findings),
        "sha256": photo.sha256,
        "width": photo.width,
        "height": photo.height,
        "duplicate_group": photo.duplicate_group,
    }
    if photo.refused or not photo.has_mask or photo.width is None or photo.height is None:
        return DatasetPhoto(verdict=PhotoVerdict.REFUSED, **common)
    if edited is not None:
        caption = edited
    else:
        caption = render_caption(options.caption_template, candidate.sku, candidate.sidecar, options.trigger_token)
        if photo.described is not None:
            caption = with_description(caption, photo.described)
    return DatasetPhoto(
        verdict=PhotoVerdict.KEPT,
        bucket=plan_bucket(photo.width, photo.height, options.gates.bucket_resolution),
        image_file=f"{IMAGES_DIR}/{photo.id}.png",
        caption_file=f"{IMAGES_DIR}/{photo.id}.txt",
        mask_file=f"{MASKS_DIR}/{photo.id}.png",
        caption=caption,
        caption_edited=edited is not None,
        **common,
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def _thumbnail(image: Image.Image) -> bytes:
    thumb = image.convert("RGB")
    thumb.thumbnail((256, 256), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _finish_dataset(
    staging: Path, manifest: DatasetManifest, write_report: Callable[[DatasetManifest, Path], object] | None
) -> DatasetManifest:
    """Drop the staged files of photos refused after staging (duplicates), write captions, dataset.json, report."""
    kept: list[tuple[str, bytes, str]] = []
    for record in sorted(manifest.photos, key=lambda p: p.id):
        if record.verdict is not PhotoVerdict.KEPT:
            for folder in (IMAGES_DIR, MASKS_DIR):
                (staging / folder / f"{record.id}.png").unlink(missing_ok=True)
            continue
        assert record.image_file and record.caption_file
        caption_bytes = ((record.caption or "") + "\n").encode("utf-8")
        (staging / record.caption_file).write_bytes(caption_bytes)
        kept.append((record.id, (staging / record.image_file).read_bytes(), record.caption or ""))
    manifest = manifest.model_copy(update={"dataset_sha256": dataset_digest(kept)})
    (staging / DATASET_FILE).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if write_report is not None:
        write_report(manifest, staging)
    _fsync_tree(staging)
    return manifest


def _previous_name(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.previous"


def recover_interrupted_swap(out_dir: Path) -> None:
    """After a check killed mid-swap: put the previous dataset back if the new one never arrived; clear leftovers."""
    previous = _previous_name(out_dir)
    if previous.exists():
        if out_dir.exists():
            shutil.rmtree(previous)
        else:
            previous.rename(out_dir)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.check-*"):
        if leftover.is_dir() and not _still_running(leftover.name.rpartition("-")[2]):
            shutil.rmtree(leftover, ignore_errors=True)


def _still_running(pid_text: str) -> bool:
    """Whether the check that named a staging folder is still at work (then its folder is left alone)."""
    if not pid_text.isdigit():
        return False
    if int(pid_text) == os.getpid():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _swap_in(staging: Path, out_dir: Path) -> None:
    previous = _previous_name(out_dir)
    if out_dir.exists():
        out_dir.rename(previous)
    staging.rename(out_dir)
    if previous.exists():
        shutil.rmtree(previous)


def _fsync_tree(root: Path) -> None:
    """Flush the new files before the swap, so a power cut cannot leave a renamed folder of empty files."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def check_out_folder(out_dir: Path, photos_dir: Path) -> None:
    """Refuse an --out that would hide or destroy something: the photos folder, or a folder that is not a dataset."""
    out = out_dir.absolute()
    photos = photos_dir.absolute()
    if out == photos or photos in out.parents or out in photos.parents:
        raise ConfigurationError(f"--out {out_dir} must lie outside the photos folder {photos_dir} (and not hold it).")
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out_dir} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not (out / DATASET_FILE).is_file():
        raise ConfigurationError(
            f"--out {out_dir} already holds files and no {DATASET_FILE}: the check replaces its --out folder, so "
            "give it a new or an earlier dataset folder."
        )


_BRAND = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")  # as brand profiles and incoming/<brand>/ keys spell it


def check_brand(brand: str) -> None:
    if not _BRAND.match(brand):
        raise ConfigurationError(
            f"--brand {brand!r}: a brand is lower-case letters, digits and '-' (at most 64), as in incoming/<brand>/."
        )


_SAFE_TRIGGER = re.compile(r"^[^\s,{}]{1,64}$")


def check_trigger_token(token: str | None) -> None:
    if token is not None and not _SAFE_TRIGGER.match(token):
        raise ConfigurationError(
            f"--trigger-token {token!r} must be one word of at most 64 characters, without commas or braces."
        )


def load_captioner(folder: Path, max_new_tokens: int = 30) -> Captioner:
    """A local BLIP captioning model (a `transformers` folder), never downloaded; runs on CPU in float32.

    Raises ConfigurationError when the folder is missing or is not a BLIP model `transformers` can load offline.
    """
    if not folder.is_dir():
        raise ConfigurationError(f"--captioner {folder}: no such folder (captioning models are never downloaded).")
    # 1. load: lazily, since torch is heavy and most checks caption from the template alone
    try:
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except ImportError as error:
        raise ConfigurationError(
            "--captioner needs torch and transformers: pip install torch==2.13.0 && pip install -e '.[gpu]' "
            f"({error.name} is missing)."
        ) from error
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"--captioner {folder} is not a BLIP captioning model folder: {error}") from error
    device = torch.device("cpu")
    torch.nn.Module.to(model, device)  # the base method: transformers wraps `to` in a way mypy misreads
    model.eval()

    def caption(image: Image.Image) -> str:
        # 2. encode, 3. generate greedily (deterministic), 4. decode
        inputs = processor(images=image, return_tensors="pt").to(device)
        with torch.inference_mode():
            tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return str(processor.decode(tokens[0], skip_special_tokens=True)).strip()

    return caption
