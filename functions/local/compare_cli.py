"""`catalog compare`: run engines side by side on one prompt x product x seed set.

    catalog compare --brand acme --prompts prompts.yaml --products SKU_DIR \\
        --engines base,acme/ss27@v3,ti:acme/ss27@v4,controlnet:canny,bedrock:amazon.nova-canvas-v1:0,\\
openai:gpt-image-1 --seeds 3 --models tiny --out CMP

Writes CMP/report.html, CMP/metrics.csv and CMP/summary.json; each cell is kept under CMP/cells/, so a re-run fills
only the missing ones (failed cells: throttled, refused, timed out). Exit code 0 when every cell has an image, 1 when
some failed (each recorded with its reason), 2 for bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from functions.errors import ConfigurationError
from functions.stages.comparison.engines import EngineContext, EngineFailedError, EngineSpecError
from functions.stages.comparison.grid import CellRecord, GridInputError, GridPlan, find_products, read_prompts
from functions.stages.comparison.prices import PriceTable, PriceTableError

if TYPE_CHECKING:
    from functions.ports import GpuJobRunner
    from functions.stages.comparison.compare import ComparisonResult
    from functions.stages.comparison.grid import Embedder, UnsafeScorer

console = Console(stderr=True)
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def recipe_runner_factory(models: str | None, roots: list[Path]) -> Callable[[], GpuJobRunner]:
    """() -> the in-process GPU worker over `models` (gpu_jobs and torch load only when a recipe engine is used)."""

    def build() -> GpuJobRunner:
        if models is None:
            raise EngineSpecError("--engines: our recipes need --models (tiny or a model config JSON)")
        from functions.adapters.local.gpu_worker import InProcessGpuWorker

        return InProcessGpuWorker(models, data_roots=[root for root in roots if root.exists()])

    return build


def load_nsfw_classifier(source: str | None) -> UnsafeScorer | None:
    if source is None:
        return None
    try:
        from gpu_jobs.embeddings import EmbeddingModelError, NsfwClassifier
    except ImportError as error:
        raise ConfigurationError(f"--nsfw-model needs the gpu extra ({error.name} is missing)") from error
    try:
        return NsfwClassifier.load(source)
    except EmbeddingModelError as error:
        raise ConfigurationError(f"--nsfw-model {error}") from error


def load_embedder(source: str | None, brand_photos: Path | None) -> Embedder | None:
    if source is None:
        return None
    try:
        from gpu_jobs.embeddings import ClipScorer, EmbeddingModelError
    except ImportError as error:
        raise ConfigurationError(f"--embedding-model needs the gpu extra ({error.name} is missing)") from error
    photos = []
    if brand_photos is not None:
        if not brand_photos.is_dir():
            raise ConfigurationError(f"--brand-photos {brand_photos}: not a folder")
        photos = sorted(path for path in brand_photos.rglob("*") if path.suffix.lower() in PHOTO_SUFFIXES)
    try:
        return ClipScorer.load(source, brand_photos=photos)
    except EmbeddingModelError as error:
        raise ConfigurationError(f"--embedding-model {error}") from error


def compare(
    brand: Annotated[str, typer.Option(help="The brand whose versions and store are compared, e.g. acme.")],
    prompts: Annotated[Path, typer.Option(help="prompts.yaml/.json: a list of prompts or {id, prompt, negative}.")],
    products: Annotated[
        Path, typer.Option(help="Folder of product cutouts (PNG with alpha): <sku>.png or <sku>/cutout.png.")
    ],
    engines: Annotated[
        str,
        typer.Option(
            help="Comma-separated: base, <brand>/<name>@v<N>, ti:<brand>/<name>@v<N>, controlnet:canny|depth (join "
            "with +), bedrock:<model id>, bedrock-text:<model id>, openai:<model>, openai-text:<model>."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Comparison folder (created; a re-run resumes it).")],
    seeds: Annotated[int, typer.Option(min=1, max=16, help="Seeds per cell: 0..N-1, the same across a row.")] = 3,
    models: Annotated[
        str | None, typer.Option(help="Our recipes' models: tiny, or a model config JSON (needed for our engines).")
    ] = None,
    brands: Annotated[
        str | None,
        typer.Option(
            help="The brand store: a folder, or s3://bucket/brands/ with --endpoint (default: $CATALOG_BRANDS_DIR or "
            "./brands).",
            show_default=False,
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="Run our recipes on this deployed SageMaker async endpoint instead of --models (AWS)."),
    ] = None,
    work: Annotated[
        str | None,
        typer.Option(help="With --endpoint: s3://bucket/prefix/ for the endpoint's requests, inputs and outputs."),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(min=64, max=2048, help="Square image side (default: 128 with tiny models, else 1024)."),
    ] = None,
    prices: Annotated[
        Path | None, typer.Option(help="Price table (JSON/YAML) replacing the defaults (README: Comparing models).")
    ] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="A local CLIP folder (never downloaded), or tiny, for CLIP-T and CLIP-I."),
    ] = None,
    brand_photos: Annotated[
        Path | None, typer.Option(help="The brand's training photos, for CLIP-I similarity.")
    ] = None,
    nsfw_model: Annotated[
        str | None,
        typer.Option(help="A local image-classification folder with an nsfw/unsafe label (never downloaded), or tiny."),
    ] = None,
    failures: Annotated[
        Path | None,
        typer.Option(help="Failure log (JSON Lines of rejected cases): re-run their prompts and seeds, per reason."),
    ] = None,
) -> None:
    """Compare engines side by side: report.html, metrics.csv and summary.json under --out."""
    import os

    from functions.stages.comparison.compare import run_comparison

    store = brands or os.environ.get("CATALOG_BRANDS_DIR") or "brands"
    try:
        price_table = PriceTable.from_file(prices) if prices is not None else PriceTable()
        plan = GridPlan(
            prompts=read_prompts(prompts),
            products=find_products(products),
            seeds=tuple(range(seeds)),
            size=size or (128 if models == "tiny" else 1024),
        )
        if plan.size % 16:
            raise GridInputError(f"--size {plan.size}: must be a multiple of 16")
        embedder = load_embedder(embedding_model, brand_photos)
        nsfw = load_nsfw_classifier(nsfw_model)
        if endpoint is not None:
            context = endpoint_context(brand, store, endpoint, work, price_table)
        else:
            if store.startswith("s3://"):
                raise GridInputError(f"--brands {store}: an S3 brand store needs --endpoint (our recipes run there)")
            brands_dir = Path(store)
            context = EngineContext(
                brand=brand,
                brands_uri=brands_dir.resolve().as_uri() if brands_dir.is_dir() else None,
                recipe_runner_factory=recipe_runner_factory(
                    models, [products.resolve(), out.resolve(), brands_dir.resolve()]
                ),
                prices=price_table,
            )
        out.mkdir(parents=True, exist_ok=True)
        result = run_comparison(
            plan, engines, out, context, embedder=embedder, nsfw=nsfw, failure_log=failures, on_cell=_progress
        )
    except (GridInputError, PriceTableError, EngineSpecError, EngineFailedError, ConfigurationError) as error:
        console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=EXIT_USAGE) from error
    _print_summary(result)
    failed = [record for record in result.records if not record.ok]
    raise typer.Exit(code=EXIT_SOME_FAILED if failed else EXIT_OK)


def endpoint_context(brand: str, store: str, endpoint: str, work: str | None, prices: PriceTable) -> EngineContext:
    """Our recipes on the deployed async endpoint, the brand store and the work prefix in S3 (credentials, region
    and endpoints from the environment, as every boto3 client here)."""
    if work is None or not work.startswith("s3://"):
        raise GridInputError("--endpoint needs --work s3://bucket/prefix/ (the endpoint reads and writes only S3)")
    if not store.startswith("s3://"):
        raise GridInputError(f"--endpoint needs the deployed brand store (--brands s3://...), got {store}")
    import boto3

    from functions.adapters.aws.endpoint_runner import AsyncEndpointRunner
    from functions.adapters.aws.s3_storage import S3Storage

    s3, runtime = boto3.client("s3"), boto3.client("sagemaker-runtime")
    prefix = work.rstrip("/")
    return EngineContext(
        brand=brand,
        brands_uri=store,
        recipe_runner_factory=lambda: AsyncEndpointRunner(endpoint, f"{prefix}/requests/", s3=s3, runtime=runtime),
        work_storage=S3Storage(s3),
        work_prefix=prefix,
        prices=prices,
    )


def _progress(record: CellRecord, reused: bool) -> None:
    state = "kept" if reused else ("ok" if record.ok else f"failed: {record.reason}")
    console.print(f"{record.prompt_id} {record.sku} {record.engine} seed {record.seed}: {state}", markup=False)


def _print_summary(result: ComparisonResult) -> None:
    for engine, item in result.summary.items():
        failed = ", ".join(f"{reason} {count}" for reason, count in item["failed"].items()) or "none failed"
        cost = "no price" if item["cost_per_image"] is None else f"{item['currency']} {item['cost_per_image']:.4f}"
        console.print(f"{engine}: {item['images']}/{item['cells']} images ({failed}), {cost} per image", markup=False)
    console.print(f"{result.reused} cells kept from an earlier run", markup=False)
    for name, path in result.paths.items():
        console.print(f"{name}: {path}", markup=False)
