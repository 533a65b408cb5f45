"""The comparison grid: prompt x product rows, engine columns, the same seeds across a row; resumable per cell.

Each cell is a folder `CMP/cells/<prompt>/<sku>/<engine>/seed-<seed>/` holding `cell.json` (written last) and, when
the engine made an image, `image.png` with the product as placed (`placed.png`) and the region kept exact
(`keep_mask.png`). A re-run skips every cell whose `cell.json` says it has an image, and runs again the cells that
failed (throttled, refused, timed out) or never ran: it fills only the missing cells.

Each image is scored once, here: pixel metrics from `functions.stages.image_metrics`, the pipeline's own automatic
checks (`functions.stages.checks`, so a reviewer's flags and the report agree), and the embedding metrics when an
embedding model is configured.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from functions.stages.checks import check_generated_output
from functions.stages.comparison.engines import (
    Engine,
    EngineFailedError,
    GenerationTask,
    place_product,
    product_mask,
    read_cutout,
)
from functions.stages.comparison.prices import PriceTable
from functions.stages.image_metrics import (
    image_sanity,
    locate_product,
    metric_warnings,
    product_fidelity,
)
from schemas import JobKind, JobOutput, RunManifest, Severity, Status

CELL_RECORD = "cell.json"
_SLUG = re.compile(r"[^A-Za-z0-9._@-]+")


class GridInputError(ValueError):
    """A prompts file or products folder that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class PromptSpec:
    id: str
    text: str
    negative: str | None = None


@dataclass(frozen=True)
class ProductSpec:
    sku: str
    cutout: Path


@dataclass(frozen=True)
class GridPlan:
    prompts: tuple[PromptSpec, ...]
    products: tuple[ProductSpec, ...]
    seeds: tuple[int, ...]
    size: int = 128


@dataclass
class CellRecord:
    """One prompt x product x engine x seed: its image (or why none) and its scores."""

    prompt_id: str
    prompt: str
    sku: str
    engine: str
    seed: int
    status: str  # "ok" or "failed"
    reason: str | None = None
    message: str | None = None
    seconds: float | None = None
    cost: float | None = None
    currency: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # the automatic checks' codes, as a reviewer sees them
    warnings: list[str] = field(default_factory=list)  # the metrics' warning codes
    versions: dict[str, str] = field(default_factory=dict)
    seed_honoured: bool = True
    image: str | None = None  # relative to the comparison folder

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CellRecord:
        return cls(**json.loads(text))


class Embedder(Protocol):
    """Embedding metrics (gpu_jobs.embeddings.ClipScorer): prompt adherence and brand similarity."""

    name: str

    def prompt_adherence(self, image: Image.Image, prompt: str) -> float: ...

    def brand_similarity(self, image: Image.Image) -> float | None: ...


class UnsafeScorer(Protocol):
    """A configured NSFW classifier (gpu_jobs.embeddings.NsfwClassifier): the probability of its unsafe labels."""

    name: str

    def unsafe_probability(self, image: Image.Image) -> float: ...


# ---- inputs ----------------------------------------------------------------------------------------------------------
def slug(text: str) -> str:
    cleaned = _SLUG.sub("-", text).strip("-.")
    return cleaned[:80] or "x"


def read_prompts(path: Path) -> tuple[PromptSpec, ...]:
    """prompts.yaml / .json: a list of prompts, each a string or {id, prompt, negative_prompt}."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise GridInputError(f"{path}: cannot read the prompts ({error.strerror or error})") from error
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as error:
        raise GridInputError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'} ({type(error).__name__})"
        ) from error
    return parse_prompts(raw, path)


def parse_prompts(raw: Any, path: Path) -> tuple[PromptSpec, ...]:
    """A list of prompts (strings or {id, prompt, negative_prompt}); errors name `path` and the entry."""
    if isinstance(raw, dict) and "prompts" in raw:
        raw = raw["prompts"]
    if not isinstance(raw, list) or not raw:
        raise GridInputError(f"{path}: expected a non-empty list of prompts (strings or {{id, prompt}})")
    prompts: list[PromptSpec] = []
    for index, entry in enumerate(raw):
        if isinstance(entry, str):
            entry = {"prompt": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise GridInputError(f"{path}: prompts[{index}]: needs a non-empty prompt")
        prompt_id = slug(str(entry.get("id") or f"p{index + 1}"))
        negative = entry.get("negative_prompt")
        prompts.append(PromptSpec(prompt_id, entry["prompt"].strip(), negative if isinstance(negative, str) else None))
    ids = [prompt.id for prompt in prompts]
    if len(set(ids)) != len(ids):
        raise GridInputError(f"{path}: prompt ids must be unique, got {ids}")
    return tuple(prompts)


RUN_MANIFEST = "manifest.json"  # `catalog run`'s, in its output folder


def find_products(folder: Path) -> tuple[ProductSpec, ...]:
    """Product cutouts under `folder`: a `catalog run` output folder (its manifest's cutouts, the SKU's first photo
    as `<sku>` and further ones as `<sku>-<photo>`), or PNGs with alpha: `<sku>.png`, `<sku>/cutout.png`,
    `<sku>/<photo>.cutout.png` or `<sku>/*.png`, the SKU being the file's stem or its folder's name."""
    if not folder.is_dir():
        raise GridInputError(f"{folder}: not a folder of product cutouts")
    products = _products_of_a_run(folder) if (folder / RUN_MANIFEST).is_file() else _cutouts_in(folder)
    if not products:
        raise GridInputError(f"{folder}: no product cutouts (PNG with alpha) found")
    return tuple(products.values())


def _products_of_a_run(folder: Path) -> dict[str, ProductSpec]:
    try:
        manifest = RunManifest.model_validate_json((folder / RUN_MANIFEST).read_bytes())
    except ValueError as error:
        raise GridInputError(f"{folder / RUN_MANIFEST}: not a catalog run manifest ({error})") from error
    products: dict[str, ProductSpec] = {}
    for entry in manifest.entries:
        cutout = entry.outputs.get("cutout")
        if entry.status is not Status.SUCCEEDED or cutout is None:
            continue
        sku = slug(entry.sku)
        if sku in products:
            sku = slug(f"{entry.sku}-{Path(entry.source).stem}")
        products[sku] = ProductSpec(sku, folder / cutout)
    return products


def _cutouts_in(folder: Path) -> dict[str, ProductSpec]:
    products: dict[str, ProductSpec] = {}
    for path in sorted(folder.rglob("*.png")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not _has_alpha(path):
            continue
        sku = slug(relative.stem if len(relative.parts) == 1 else relative.parts[-2])
        named_cutout = path.stem == "cutout" or path.stem.endswith(".cutout")
        if sku in products and (not named_cutout or products[sku].cutout.stem.endswith("cutout")):
            continue
        products[sku] = ProductSpec(sku, path)
    return products


def _has_alpha(path: Path) -> bool:
    """Read from the header only: masks and previews (no alpha) are not products."""
    try:
        with Image.open(path) as image:
            return "A" in image.getbands() or "transparency" in image.info
    except OSError:
        return False


# ---- scoring one image -----------------------------------------------------------------------------------------------
def score_cell(
    cell_dir: Path,
    image: Image.Image,
    placed: Image.Image,
    keep_mask: Image.Image | None,
    prompt: str,
    embedder: Embedder | None,
    nsfw: UnsafeScorer | None = None,
) -> tuple[dict[str, float | None], list[str]]:
    """Metrics and the automatic checks' flags for one image; writes the (located) placed.png and keep_mask.png."""
    output = np.asarray(image.convert("RGB"))
    placed_rgba = np.asarray(placed.convert("RGBA"))
    keep = None if keep_mask is None else np.asarray(keep_mask.convert("L")) >= 128
    location = locate_product(output, placed_rgba, keep)
    metrics: dict[str, float | None] = {**product_fidelity(output, location), **image_sanity(output)}
    if embedder is not None:
        metrics["clip_t"] = round(embedder.prompt_adherence(image, prompt), 3)
        similarity = embedder.brand_similarity(image)
        metrics["clip_i_brand"] = None if similarity is None else round(similarity, 4)
    if nsfw is not None:
        metrics["nsfw_score"] = round(nsfw.unsafe_probability(image), 4)
    # The product as found, for the pipeline's own check (and for a person opening the cell).
    located = np.zeros_like(placed_rgba)
    located[..., :3] = location.reference_rgb
    located[..., 3] = np.where(location.mask, 255, 0)
    Image.fromarray(located, "RGBA").save(cell_dir / "placed.png")
    Image.fromarray(np.where(location.keep, 255, 0).astype(np.uint8)).save(cell_dir / "keep_mask.png")
    details = {
        "mode": "inpaint",
        "placed_uri": (cell_dir / "placed.png").resolve().as_uri(),
        "keep_mask_uri": (cell_dir / "keep_mask.png").resolve().as_uri(),
    }
    flags = check_generated_output(
        JobKind.LIFESTYLE, JobOutput(uri=(cell_dir / "image.png").resolve().as_uri(), details=details), _read_file_uri
    )
    return metrics, [flag.code for flag in flags if flag.severity is Severity.WARNING]


def _read_file_uri(uri: str) -> Image.Image:
    from urllib.parse import unquote, urlparse

    return Image.open(Path(unquote(urlparse(uri).path)))


# ---- running the grid ------------------------------------------------------------------------------------------------
def cell_dir(out_dir: Path, prompt_id: str, sku: str, engine: str, seed: int) -> Path:
    return out_dir / "cells" / slug(prompt_id) / slug(sku) / slug(engine) / f"seed-{seed}"


def read_cell(folder: Path) -> CellRecord | None:
    try:
        return CellRecord.from_json((folder / CELL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class CellJob:
    prompt: PromptSpec
    product: ProductSpec
    engine: Engine
    seed: int


def plan_cells(plan: GridPlan, engines: Sequence[Engine]) -> Iterator[CellJob]:
    for prompt in plan.prompts:
        for product in plan.products:
            for engine in engines:
                for seed in plan.seeds:
                    yield CellJob(prompt, product, engine, seed)


def run_cell(
    job: CellJob,
    out_dir: Path,
    size: int,
    prices: PriceTable,
    embedder: Embedder | None,
    nsfw: UnsafeScorer | None = None,
) -> CellRecord:
    """Generate and score one cell; a failure is a `failed` record with its reason, never a raise."""
    folder = cell_dir(out_dir, job.prompt.id, job.product.sku, job.engine.name, job.seed)
    folder.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "prompt_id": job.prompt.id,
        "prompt": job.prompt.text,
        "sku": job.product.sku,
        "engine": job.engine.name,
        "seed": job.seed,
    }
    task = GenerationTask(
        job.prompt.text, job.prompt.negative, job.seed, size, job.product.cutout, job.product.sku, folder / "engine"
    )
    try:
        generated = job.engine.generate(task)
        image = generated.image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        image.save(folder / "image.png")
        placed = generated.placed or place_product(read_cutout(job.product.cutout), size)
        keep = generated.keep_mask if generated.placed is not None else product_mask(placed)
        metrics, flags = score_cell(folder, image, placed, keep, job.prompt.text, embedder, nsfw)
    except EngineFailedError as failure:
        record = CellRecord(**base, status="failed", reason=failure.reason, message=failure.message)
    except Exception as error:  # one broken cell (a bad image, a metric on a degenerate input) never stops the grid
        record = CellRecord(**base, status="failed", reason="error", message=f"{type(error).__name__}: {error}"[:300])
    else:
        metrics["seconds"] = round(generated.seconds, 3)
        cost = prices.cost(job.engine.name, job.engine.kind, generated.seconds)
        metrics["cost"] = cost
        record = CellRecord(
            **base,
            status="ok",
            seconds=round(generated.seconds, 3),
            cost=cost,
            currency=prices.currency if cost is not None else None,
            metrics=metrics,
            flags=flags,
            warnings=metric_warnings(metrics),
            versions=generated.versions,
            seed_honoured=generated.seed_honoured,
            image=(folder / "image.png").relative_to(out_dir).as_posix(),
        )
    (folder / CELL_RECORD).write_text(record.to_json(), encoding="utf-8")
    return record


def run_grid(
    plan: GridPlan,
    engines: Sequence[Engine],
    out_dir: Path,
    prices: PriceTable,
    embedder: Embedder | None = None,
    on_cell: Callable[[CellRecord, bool], None] | None = None,
    nsfw: UnsafeScorer | None = None,
) -> list[CellRecord]:
    """Every cell of the grid: the ones already made are read back, the missing ones are made now."""
    records: list[CellRecord] = []
    for job in plan_cells(plan, engines):
        folder = cell_dir(out_dir, job.prompt.id, job.product.sku, job.engine.name, job.seed)
        existing = read_cell(folder)
        reused = existing is not None and existing.ok and (out_dir / (existing.image or "")).is_file()
        if reused and existing is not None:
            record = existing
        else:
            record = run_cell(job, out_dir, plan.size, prices, embedder, nsfw)
        records.append(record)
        if on_cell is not None:
            on_cell(record, reused)
    return records


def cells_as_dicts(records: Sequence[CellRecord]) -> list[dict[str, Any]]:
    return [asdict(record) for record in records]
