"""The promotion gate: a candidate version against the active one on the brand's fixed validation set.

`catalog brand promote acme ss27@v4` asks `build_gate(...)`'s gate before it changes the active version. The gate
runs `catalog compare` with two engines, the active version (or `base` when none is active yet) and the candidate, on
the validation set the brand store keeps, and refuses when a gated metric is worse by more than its threshold, or
when the candidate failed cells the active one made. The comparison (report.html, metrics.csv, summary.json and the
cells) is kept with the candidate: `<brands>/<brand>/versions/<candidate>/gate/against-<active>/`.

The validation set, `<brands>/<brand>/validation.yaml` (or `.json`):

    prompts:                          # as in compare's prompts file
      - {id: terrace, prompt: "a linen shirt on a sunny terrace"}
      - a linen shirt in a white studio
    products: validation/products     # cutouts, relative to the brand's folder (<sku>.png or <sku>/cutout.png)
    seeds: [0, 1, 2]
    size: 1024                        # optional (default: 128 with tiny models, else 1024)
    models: /opt/models/config.json   # our recipes' model config, or tiny (default: $CATALOG_GATE_MODELS)
    embedding_model: /opt/models/clip # optional: gates clip_t as well
    thresholds:                       # optional: the largest change for the worse each metric may show
      product_pixels_preserved: 0.0
      garment_delta_e: 1.0
      silhouette_iou: 0.05
      clip_t: 1.0
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.errors import ConfigurationError
from functions.stages.brand_versions import BrandStoreError, GateVerdict, PromotionGate, VersionStorage, brand_uri
from functions.stages.comparison.engines import EngineContext, EngineFailedError, EngineSpecError
from functions.stages.comparison.grid import GridInputError, GridPlan, PromptSpec, find_products, parse_prompts
from functions.stages.image_metrics import METRICS

VALIDATION_NAMES = ("validation.yaml", "validation.yml", "validation.json")
# (models, data roots) -> GPU job runner; None: the in-process worker (compare's). Tests put a small runner here.
DEFAULT_RUNNER_FACTORY: Callable[[str, list[Path]], Any] | None = None
DEFAULT_THRESHOLDS: dict[str, float] = {
    "product_pixels_preserved": 0.0,  # the product's pixels are a promise, not a preference: no slack
    "garment_delta_e": 1.0,  # under half a just-noticeable difference (~2.3)
    "silhouette_iou": 0.05,
    "clip_t": 1.0,
    "clip_i_brand": 0.02,
}


@dataclass(frozen=True)
class ValidationSet:
    prompts: tuple[PromptSpec, ...]
    products_dir: Path
    seeds: tuple[int, ...]
    size: int | None
    models: str | None
    embedding_model: str | None
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))


def read_validation_set(brand_dir: Path) -> ValidationSet | None:
    """The brand's validation set, or None when it has none; a malformed one is a GridInputError naming the field."""
    path = next((brand_dir / name for name in VALIDATION_NAMES if (brand_dir / name).is_file()), None)
    if path is None:
        return None
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            import yaml

            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as error:
        raise GridInputError(f"{path}: cannot be read ({type(error).__name__}: {error})") from error
    if not isinstance(raw, dict):
        raise GridInputError(f"{path}: expected a mapping with prompts, products and seeds")
    unknown = set(raw) - {"prompts", "products", "seeds", "size", "models", "embedding_model", "thresholds"}
    if unknown:
        raise GridInputError(f"{path}: unknown field {', '.join(sorted(unknown))}")
    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise GridInputError(f"{path}: seeds: a non-empty list of integers >= 0, got {seeds!r}")
    products = raw.get("products")
    if not isinstance(products, str) or not products or products.startswith("/") or ".." in products.split("/"):
        raise GridInputError(f"{path}: products: a folder inside the brand's folder, got {products!r}")
    thresholds = dict(DEFAULT_THRESHOLDS)
    for name, value in (raw.get("thresholds") or {}).items():
        if name not in METRICS or METRICS[name].better == "neither":
            raise GridInputError(f"{path}: thresholds.{name}: not a metric that can regress")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise GridInputError(f"{path}: thresholds.{name}: must be a number >= 0, got {value!r}")
        thresholds[name] = float(value)
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size < 64 or size % 16):
        raise GridInputError(f"{path}: size: a multiple of 16 from 64, got {size!r}")
    models, embedding = raw.get("models"), raw.get("embedding_model")
    return ValidationSet(
        prompts=parse_prompts(raw.get("prompts"), path),
        products_dir=brand_dir / products,
        seeds=tuple(seeds),
        size=size,
        models=_relative(models, brand_dir),
        embedding_model=_relative(embedding, brand_dir),
        thresholds=thresholds,
    )


def _relative(value: Any, folder: Path) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if value == "tiny" or value.startswith("/"):
        return value
    return str(folder / value)


def regressions(summary: dict[str, Any], candidate: str, active: str, thresholds: dict[str, float]) -> list[str]:
    """One line per gated metric the candidate is worse on by more than its threshold (means over the set)."""
    lines = []
    mine, theirs = summary[candidate], summary[active]
    for name, threshold in thresholds.items():
        if name not in mine["metrics"] or name not in theirs["metrics"]:
            continue
        new, old = mine["metrics"][name]["mean"], theirs["metrics"][name]["mean"]
        worse = old - new if METRICS[name].better == "higher" else new - old
        if worse > threshold:
            lines.append(
                f"{name} {'fell' if METRICS[name].better == 'higher' else 'rose'} from {old:.4g} to {new:.4g} "
                f"(worse by {worse:.4g}, allowed {threshold:g})"
            )
    if mine["images"] < theirs["images"]:
        failed = ", ".join(f"{reason} {count}" for reason, count in mine["failed"].items())
        lines.append(
            f"the candidate made {mine['images']} of {mine['cells']} images ({failed}); {active} made "
            f"{theirs['images']}"
        )
    new_flags, old_flags = sum(mine["flags"].values()), sum(theirs["flags"].values())
    if new_flags > old_flags:
        lines.append(f"the automatic checks flagged {new_flags} of its images ({active}: {old_flags})")
    return lines


def build_gate(
    storage: VersionStorage,
    brands_uri: str,
    brand: str,
    *,
    models: str | None = None,
    endpoint: str | None = None,
    work: str | None = None,
    runner_factory: Callable[[str, list[Path]], Any] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> PromotionGate | None:
    """The brand's gate, or None when the brand store keeps no validation set for it (the CLI says so).

    On AWS (an s3:// store and `endpoint`, default $CATALOG_GATE_ENDPOINT, with `work`, default $CATALOG_GATE_WORK)
    our recipes run on the deployed endpoint; otherwise here, with the validation set's `models`.
    Every problem (a malformed validation set, no models, a cutout missing) is a BrandStoreError: a refusal."""
    endpoint = endpoint or os.environ.get("CATALOG_GATE_ENDPOINT") or None
    work = work or os.environ.get("CATALOG_GATE_WORK") or None
    on_endpoint = endpoint is not None and brands_uri.startswith("s3://")
    work_root, upload = _local_brand_folder(storage, brands_uri, brand, with_versions=not on_endpoint)
    try:
        validation = read_validation_set(work_root)
    except GridInputError as error:
        raise BrandStoreError(f"the promotion gate cannot run: {error}") from error
    if validation is None:
        return None
    chosen_models = models or validation.models or os.environ.get("CATALOG_GATE_MODELS")
    if on_endpoint:
        chosen_models = f"endpoint:{endpoint}"
    if chosen_models is None:
        raise BrandStoreError(
            f"{brand}'s validation set names no models: add `models: <config JSON or tiny>` to it, or set "
            "CATALOG_GATE_MODELS"
        )

    def gate(candidate: str, active: str | None) -> GateVerdict:
        try:
            return run_gate(candidate, active)
        except (GridInputError, ConfigurationError, EngineSpecError, EngineFailedError) as error:
            raise BrandStoreError(f"the promotion gate cannot run: {error}") from error

    def run_gate(candidate: str, active: str | None) -> GateVerdict:
        from functions.local.compare_cli import load_embedder, recipe_runner_factory
        from functions.stages.comparison.compare import run_comparison

        baseline = f"{brand}/{active}" if active else "base"
        folder_name = f"against-{active or 'base'}"
        out = work_root / "versions" / candidate / "gate" / folder_name
        plan = GridPlan(
            prompts=validation.prompts,
            products=find_products(validation.products_dir),
            seeds=validation.seeds,
            size=validation.size or (128 if chosen_models == "tiny" else 1024),
        )
        roots = [work_root.resolve(), validation.products_dir.resolve(), out.resolve()]
        factory = (
            runner_factory or DEFAULT_RUNNER_FACTORY or (lambda models, roots: recipe_runner_factory(models, roots)())
        )
        if on_endpoint and endpoint is not None:
            from functions.local.compare_cli import endpoint_context
            from functions.stages.comparison.prices import PriceTable

            context = endpoint_context(brand, brands_uri, endpoint, work, PriceTable())
        else:
            context = EngineContext(
                brand=brand,
                brands_uri=work_root.parent.resolve().as_uri(),
                recipe_runner_factory=lambda: factory(str(chosen_models), roots),
            )
        out.mkdir(parents=True, exist_ok=True)
        say(
            f"promotion gate: {candidate} against {baseline} on {len(plan.prompts)} prompts x "
            f"{len(plan.products)} products x {len(plan.seeds)} seeds"
        )
        result = run_comparison(
            plan,
            [baseline, f"{brand}/{candidate}"],
            out,
            context,
            embedder=load_embedder(validation.embedding_model, None),
        )
        lines = regressions(result.summary, f"{brand}/{candidate}", baseline, validation.thresholds)
        report_uri = upload(out) if upload is not None else (out / "report.html").resolve().as_uri()
        return GateVerdict(passed=not lines, reasons=tuple(lines), report_uri=report_uri)

    return gate


def _local_brand_folder(
    storage: VersionStorage, brands_uri: str, brand: str, *, with_versions: bool = True
) -> tuple[Path, Callable[[Path], str] | None]:
    """The brand's folder on this machine: the store itself for a folder store; for S3, a copy of the validation set
    (and the versions, unless the endpoint reads them itself) in a temporary folder, with an upload of the gate's
    report back next to the candidate."""
    if brands_uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(brand_uri(brands_uri, brand)).path)), None
    local = Path(tempfile.mkdtemp(prefix=f"gate-{brand}-")) / brand
    prefix = brand_uri(brands_uri, brand)
    for uri in storage.list_uris(prefix):
        relative = uri[len(prefix) + 1 :]
        wanted = ("validation", "versions/") if with_versions else ("validation",)
        if relative.startswith(wanted) and "/gate/" not in relative:
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(storage.read_bytes(uri))

    def upload(folder: Path) -> str:
        relative_folder = folder.relative_to(local).as_posix()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{relative_folder}/{path.relative_to(folder).as_posix()}"
                storage.write_bytes(key, path.read_bytes(), _content_type(path.suffix))
        shutil.rmtree(local.parent, ignore_errors=True)
        return f"{prefix}/{relative_folder}/report.html"

    return local, upload


def _content_type(suffix: str) -> str:
    return {".html": "text/html", ".csv": "text/csv", ".json": "application/json", ".png": "image/png"}.get(
        suffix, "application/octet-stream"
    )


__all__ = ["BrandStoreError", "ValidationSet", "build_gate", "read_validation_set", "regressions"]
