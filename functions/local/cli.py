"""The `catalog` command line: `run`, `examples`, `schemas`."""

import os
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from functions.errors import CatalogError, ConfigurationError
from functions.stages.gpu_requests import gpu_jobs_in, parse_jobs
from functions.stages.intake import IntakeLimits
from schemas import GarmentCategory, JobResult, ManifestEntry, Severity, Status

if TYPE_CHECKING:
    from collections.abc import Sequence

    from functions.local.runner import RunSettings
    from functions.review.local_flow import ReviewOptions
    from functions.stages.brand import BrandSelection

MANIFEST_NAME = "manifest.json"

app = typer.Typer(
    help="Catalog image processor: product photos in, catalog-ready images out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _mount_subcommands() -> None:
    from functions.local.backfill_cli import backfill
    from functions.local.brand_cli import brand_app
    from functions.local.compare_cli import compare
    from functions.local.shopify_cli import shopify_app
    from functions.local.train_cli import train_app
    from functions.review.cli import review_app

    app.add_typer(review_app, name="review")
    app.add_typer(train_app, name="train")
    app.add_typer(brand_app, name="brand")
    app.add_typer(shopify_app, name="shopify")
    app.command()(compare)
    app.command()(backfill)


_mount_subcommands()

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class Preset(StrEnum):
    WHITE_SQUARE = "white-square"
    TRANSPARENT = "transparent"
    SHADOW = "shadow"


class ReviewChoice(StrEnum):
    NONE = "none"
    AUTO = "auto"
    LOCAL = "local"


class Format(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"


class Runtime(StrEnum):
    LOCAL = "local"
    AWS_SIM = "aws-sim"


# Characters that would act on the terminal instead of showing: C0/C1 controls (ESC starts a sequence that can
# recolour, clear or retitle it) and the Unicode marks that reorder or hide text.
_INVISIBLE = {
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200B,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0xFEFF,
}


def terminal_text(text: str, keep_newlines: bool = False) -> str:
    """Text from a file name, a file or an error, made safe to show: every control or bidi character in a visible
    escaped form (`\\x1b`, `\\u202e`). Print the result as text (`Text`, `markup=False`) or `escape` it for markup."""
    shown = []
    for char in text:
        code = ord(char)
        if code in _INVISIBLE and not (keep_newlines and char == "\n"):
            shown.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            shown.append(char)
    return "".join(shown)


def _shown(text: object, keep_newlines: bool = False) -> str:
    """For an f-string printed with markup: the text as typed, never as markup or a control sequence."""
    return escape(terminal_text(str(text), keep_newlines))


def _usage_error(message: str) -> typer.Exit:
    console.print(f"[bold red]Error:[/] {_shown(message, keep_newlines=True)}")
    return typer.Exit(EXIT_USAGE)


class RunProgress:
    """The progress bars both runtimes show: photos through prepare, then GPU jobs."""

    def __init__(self, progress: Progress, photos: int) -> None:
        self.progress = progress
        self.failed = 0
        self.photos = progress.add_task("Processing", total=photos, failed=0)
        self.jobs: TaskID | None = None
        self.jobs_failed = 0

    def photo_done(self, entry: ManifestEntry) -> None:
        self.failed += entry.status is Status.FAILED
        self.progress.update(
            self.photos, advance=1, failed=self.failed, description=f"Processing {_shown(entry.source[-40:])}"
        )

    def start_jobs(self, count: int) -> None:
        self.progress.update(self.photos, description="Done")
        if count:
            self.jobs = self.progress.add_task("GPU jobs", total=count, failed=0)

    def job_done(self, result: JobResult) -> None:
        if self.jobs is None:
            self.start_jobs(1)
        assert self.jobs is not None
        self.jobs_failed += result.status is Status.FAILED
        description = f"GPU {result.kind.value}"
        self.progress.update(self.jobs, advance=1, failed=self.jobs_failed, description=description)


def _progress_columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


@app.command()
def run(
    input_dir: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="A folder of photos (one sub-folder per SKU) or one photo."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")],
    background: Annotated[
        str,
        typer.Option(help="backdrop (weight-free keyer) | rembg | rembg:<model name> | rembg:<path to .onnx>"),
    ] = "backdrop",
    preset: Annotated[Preset, typer.Option(help="Packshot style.")] = Preset.WHITE_SQUARE,
    size: Annotated[int, typer.Option(min=64, max=10000, help="Packshot side in pixels (square).")] = 2000,
    fill: Annotated[
        float, typer.Option(min=0.1, max=1.0, help="Product's longer side as a share of the packshot side.")
    ] = 0.85,
    output_format: Annotated[
        Format | None,
        typer.Option("--format", help="Packshot file format (default: jpeg; png for transparent)."),
    ] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality (WebP 100 = lossless).")] = 92,
    workers: Annotated[
        int,
        typer.Option(min=0, help="Processes in parallel; 0 = one per CPU core."),
    ] = 0,
    models_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder holding rembg .onnx models (default: $CATALOG_MODELS_DIR or ~/.cache/catalog/models)."
        ),
    ] = None,
    allow_download: Annotated[
        bool, typer.Option(help="Let rembg fetch a missing model from the internet (never done otherwise).")
    ] = False,
    allow_non_commercial: Annotated[
        bool, typer.Option(help="Accept models whose licence forbids commercial use (e.g. bria-rmbg).")
    ] = False,
    max_megapixels: Annotated[float, typer.Option(min=0.1, help="Refuse photos larger than this.")] = 50.0,
    force: Annotated[bool, typer.Option(help="Process every photo again, even if already done.")] = False,
    review: Annotated[
        ReviewChoice,
        typer.Option(help="none: publish nothing | auto: approve all, no person | local: email + page on 127.0.0.1."),
    ] = ReviewChoice.NONE,
    review_timeout: Annotated[int, typer.Option(min=10, help="Seconds to wait for the reviewer.")] = 1800,
    review_port: Annotated[int, typer.Option(min=0, max=65535, help="Review page port (default: a free one).")] = 0,
    reviewer: Annotated[str, typer.Option(help="Reviewer's address, recorded with each decision.")] = (
        "reviewer@example.com"
    ),
    shopify_store: Annotated[
        str | None,
        typer.Option(
            help="Also publish approved images to this store's products: acme.myshopify.com (the Admin API token "
            "is read from the variable --shopify-token-env names)."
        ),
    ] = None,
    shopify_token_env: Annotated[
        str, typer.Option(help="Environment variable holding the store's Admin API access token.")
    ] = "SHOPIFY_ADMIN_TOKEN",  # noqa: S107 (the variable's name, not a token)
    jobs: Annotated[
        str,
        typer.Option(
            help="What to make, comma-separated: packshot, ghost_mannequin, try_on, lifestyle. "
            "A SKU's product.json `jobs` wins for that SKU."
        ),
    ] = "packshot",
    models: Annotated[
        str | None,
        typer.Option(
            help="GPU job weights: `tiny` (random tiny models: noise, to try the flow) or a model config JSON."
        ),
    ] = None,
    category: Annotated[
        GarmentCategory | None,
        typer.Option(
            metavar="CATEGORY",  # the choices are in the text: a long metavar would squeeze every option's help
            help="The garment category of photos whose product.json names none: tops, bottoms, dresses, outerwear "
            "(what try-on covers), shoes, accessories, other. A sidecar's category wins.",
        ),
    ] = None,
    brand: Annotated[
        str | None,
        typer.Option(help="The brand whose profile (adapters, prompts, model library) the GPU jobs use."),
    ] = None,
    brands: Annotated[
        Path | None,
        typer.Option(
            help="The brand store: <brand>/profile.json per brand (default: $CATALOG_BRANDS_DIR or ./brands)."
        ),
    ] = None,
    runtime: Annotated[
        Runtime,
        typer.Option(
            help="local: this machine's adapters | aws-sim: the AWS flow itself (moto, the synthesized state "
            "machine, the real handlers) on this machine, deploying nothing."
        ),
    ] = Runtime.LOCAL,
) -> None:
    """Turn a folder of product photos into cutouts and catalog packshots, with a manifest and a report."""
    from functions.local.runner import DEFAULT_BRAND, RunSettings
    from functions.review.local_flow import ReviewMode, ReviewOptions

    # 1. Check the arguments before touching anything.
    if not input_dir.exists():
        raise _usage_error(f"input {input_dir} does not exist.")
    if out.exists() and not out.is_dir():
        raise _usage_error(f"--out {out} exists and is not a folder.")
    if out.resolve() == input_dir.resolve():
        raise _usage_error("--out must differ from INPUT: outputs are never written beside the originals.")
    brand_name = brand or DEFAULT_BRAND
    review_options = ReviewOptions(
        mode=ReviewMode(review.value),
        reviewer=reviewer,
        timeout=timedelta(seconds=review_timeout),
        port=review_port,
    )
    try:
        settings = RunSettings(
            background=background,
            preset=preset.value,
            size=size,
            fill_ratio=fill,
            output_format=output_format.value if output_format else None,
            quality=quality,
            models_dir=models_dir,
            allow_download=allow_download,
            commercial=not allow_non_commercial,
            limits=IntakeLimits(max_pixels=int(max_megapixels * 1_000_000)),
            workers=workers or os.cpu_count() or 1,
            force=force,
            jobs=parse_jobs(jobs),
            models=models,
            category=category,
            brand=_brand_selection(brand, brands),
            reviewers=(reviewer,),
        )
        _check_settings(settings, review_options)
        from functions.local.publishing import publishing_options

        publishing = publishing_options(
            brands or Path(os.environ.get("CATALOG_BRANDS_DIR") or "brands"),
            brand_name,
            shopify_store,
            shopify_token_env,
        )
        review_options = ReviewOptions(**{**vars(review_options), "publishing": publishing})
    except (ConfigurationError, CatalogError, ValueError) as error:
        message = error.message if isinstance(error, CatalogError) else str(error)
        raise _usage_error(message) from error
    if settings.brand.resolved.note and brand_name != DEFAULT_BRAND:
        console.print(f"[yellow]Note:[/] {_shown(settings.brand.resolved.note, keep_newlines=True)}")

    # 2. Find the photos.
    from functions.local.discovery import discover_inputs

    photos = discover_inputs(input_dir, exclude=out)
    if not photos:
        raise _usage_error(f"no files found under {input_dir}.")
    out.mkdir(parents=True, exist_ok=True)

    # 3. Run the pipeline on the chosen runtime, with progress bars.
    with Progress(*_progress_columns(), console=console, transient=False) as progress:
        bars = RunProgress(progress, len(photos))
        try:
            if runtime is Runtime.AWS_SIM:
                from functions.local.aws_sim import run_on_aws_sim

                finished = run_on_aws_sim(input_dir, photos, out, settings, review_options, bars, on_link=_show_link)
            else:
                from functions.local.runner import run_locally

                finished = run_locally(input_dir, photos, out, settings, review_options, bars, on_link=_show_link)
        except ConfigurationError as error:
            raise _usage_error(str(error)) from error

    # 4. Say what happened. The exit status stays about processing.
    entries = finished.manifest.entries  # read from manifest.json one at a time: never all in memory
    _print_summary(entries, out / MANIFEST_NAME, finished.report)
    console.print(terminal_text(finished.review.summary(), keep_newlines=True), markup=False)  # names published files
    failed = sum(entry.status is Status.FAILED for entry in entries)
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def _brand_selection(brand: str | None, brands: Path | None) -> "BrandSelection":
    """`--brand` resolved in the brand store (`--brands`, `$CATALOG_BRANDS_DIR`, or ./brands)."""
    from functions.adapters.local.files import FileStorage, file_uri
    from functions.local.runner import NO_BRAND
    from functions.stages.brand import resolve_brand

    if brand is None:
        return NO_BRAND
    store = brands or Path(os.environ.get("CATALOG_BRANDS_DIR") or "brands")
    if brands is not None and not store.is_dir():
        raise ConfigurationError(f"--brands {store}: no such folder.")
    return resolve_brand(brand, file_uri(store) + "/", FileStorage([store]))


def _check_settings(settings: "RunSettings", review: "ReviewOptions") -> None:
    """Everything that would otherwise stop the run half-way: models, the background engine, the reviewer."""
    from functions.adapters.local.gpu_worker import load_model_config
    from functions.local.runner import build_remover

    settings.packshot_settings()  # validates preset/format combinations
    if settings.models is not None:
        load_model_config(settings.models)  # a bad config or a missing gpu extra stops the run here, not mid-batch
    elif gpu_jobs_in(settings.jobs):
        raise ConfigurationError(
            "--jobs asks for GPU jobs: add --models tiny (random tiny models, to try the flow) "
            "or --models CONFIG.json (real weights)."
        )
    if review.mode.value != ReviewChoice.NONE.value:
        from pydantic import EmailStr, TypeAdapter

        TypeAdapter(EmailStr).validate_python(review.reviewer)
    # Build the engine once here so a missing model stops the run before any work, with one clear message.
    build_remover(settings, threads=1)


def _show_link(link: str, email: str, timeout: timedelta) -> None:
    console.print(f"[bold]Review link[/] (also in {_shown(email)}):")
    console.print(link, soft_wrap=True, highlight=False, markup=False)  # unwrapped: it must stay clickable
    console.print(f"Waiting up to {int(timeout.total_seconds())} s for the decisions... (Ctrl-C ends the review)")


def _print_summary(entries: "Sequence[ManifestEntry]", manifest: Path, report: Path) -> None:
    failed = [e for e in entries if e.status is Status.FAILED]
    reused = sum(e.reused for e in entries)
    warned = sum(
        1
        for e in entries
        if e.status is Status.SUCCEEDED
        and (e.checks or any(f.severity is Severity.WARNING for item in e.review_items for f in item.flags))
    )
    if failed:
        table = Table(title=f"{len(failed)} file(s) failed", show_lines=False)
        table.add_column("File", overflow="fold")
        table.add_column("Code")
        table.add_column("Reason", overflow="fold")
        for entry in failed:
            assert entry.error is not None
            # Text, not str: a file name is shown as typed, never read as markup or sent as a control sequence.
            table.add_row(
                Text(terminal_text(entry.source)),
                Text(terminal_text(entry.error.code)),
                Text(terminal_text(entry.error.message)),
            )
        console.print(table)
    console.print(
        f"[green]{len(entries) - len(failed)} succeeded[/] ({reused} reused, {warned} with flags), "
        f"[red]{len(failed)} failed[/]."
    )
    console.print(f"Manifest: {_shown(manifest)}\nReport:   {_shown(report)}")


@app.command()
def examples(
    directory: Annotated[Path, typer.Argument(help="Folder to write the example photos into.")],
) -> None:
    """Render synthetic studio product photos (one sub-folder per SKU) to try `catalog run` on."""
    from functions.local.synthetic_photos import write_example_photos

    written = write_example_photos(directory)
    console.print(f"Wrote {len(written)} files under {_shown(directory)}")


@app.command()
def schemas(
    directory: Annotated[Path, typer.Argument(help="Folder to write the JSON Schemas into.")],
) -> None:
    """Write the JSON Schema of every contract (sidecar, manifest, job request/result, review, brand profile)."""
    from schemas.export import write_json_schemas

    for path in write_json_schemas(directory):
        console.print(terminal_text(str(path)), markup=False)


if __name__ == "__main__":  # pragma: no cover
    app()
