"""The `catalog` command line: `run`, `examples`, `schemas`."""

import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from schemas import JobResult, ManifestEntry, Status

app = typer.Typer(
    help="Catalog image processor: product photos in, catalog-ready images out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _mount_review_commands() -> None:
    from .review.cli import review_app

    app.add_typer(review_app, name="review")


_mount_review_commands()

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


def _usage_error(message: str) -> typer.Exit:
    console.print(f"[bold red]Error:[/] {message}")
    return typer.Exit(EXIT_USAGE)


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
    brand_profile: Annotated[
        Path | None, typer.Option(help="Brand profile JSON (adapters, prompts, model library) for GPU jobs.")
    ] = None,
) -> None:
    """Turn a folder of product photos into cutouts and catalog packshots, with a manifest and a report."""
    from .errors import ConfigurationError
    from .intake import IntakeLimits
    from .local_jobs import gpu_jobs_in, load_brand_profile, load_model_config, parse_jobs
    from .local_run import (
        MANIFEST_NAME,
        REPORT_NAME,
        RunSettings,
        build_remover,
        count_gpu_jobs,
        discover_inputs,
        load_previous_manifest,
        remove_stale_outputs,
        run_batch,
        run_job_stage,
        write_manifest,
    )
    from .report import write_report

    # 1. Check the arguments before touching anything.
    if not input_dir.exists():
        raise _usage_error(f"input {input_dir} does not exist.")
    if out.exists() and not out.is_dir():
        raise _usage_error(f"--out {out} exists and is not a folder.")
    if out.resolve() == input_dir.resolve():
        raise _usage_error("--out must differ from INPUT: outputs are never written beside the originals.")
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
            brand_profile=load_brand_profile(brand_profile),
        )
        settings.packshot_settings()  # validates preset/format combinations
        if models is not None:
            load_model_config(models)  # a bad config or a missing gpu extra stops the run here, not mid-batch
        elif gpu_jobs_in(settings.jobs):
            raise ConfigurationError(
                "--jobs asks for GPU jobs: add --models tiny (random tiny models, to try the flow) "
                "or --models CONFIG.json (real weights)."
            )
        if review is not ReviewChoice.NONE:
            from pydantic import EmailStr, TypeAdapter

            TypeAdapter(EmailStr).validate_python(reviewer)
        # Build the engine once here so a missing model stops the run before any work, with one clear message.
        build_remover(settings, threads=1)
    except (ConfigurationError, ValueError) as error:
        raise _usage_error(str(error)) from error

    # 2. Find the photos.
    photos = discover_inputs(input_dir, exclude=out)
    if not photos:
        raise _usage_error(f"no files found under {input_dir}.")
    out.mkdir(parents=True, exist_ok=True)
    previous = load_previous_manifest(out)

    # 3. Process them on every core, with a progress bar.
    started = datetime.now(UTC)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    failed = 0
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("Processing", total=len(photos), failed=0)

        def on_done(entry: ManifestEntry) -> None:
            nonlocal failed
            failed += entry.status is Status.FAILED
            progress.update(task, advance=1, failed=failed, description=f"Processing {entry.source[-40:]}")

        entries = run_batch(photos, out, settings, on_done=on_done)
        progress.update(task, description="Done")

        # GPU jobs run one at a time in this process, standing in for the endpoint (one GPU).
        job_count = count_gpu_jobs(entries)
        if job_count:
            gpu_task = progress.add_task("GPU jobs", total=job_count, failed=0)
            gpu_failed = 0

            def on_job(result: JobResult) -> None:
                nonlocal gpu_failed
                gpu_failed += result.status is Status.FAILED
                progress.update(gpu_task, advance=1, failed=gpu_failed, description=f"GPU {result.kind.value}")

            try:
                entries = run_job_stage(photos, entries, out, settings, on_done=on_job)
            except ConfigurationError as error:
                raise _usage_error(str(error)) from error
            progress.update(gpu_task, description="GPU jobs done")
            failed = sum(entry.status is Status.FAILED for entry in entries)

    # 4. Write the manifest and the report, and say what happened.
    remove_stale_outputs(out, previous, entries)
    manifest = write_manifest(out, input_dir.resolve(), settings, started, entries)
    report = write_report(out, manifest, REPORT_NAME)
    _print_summary(entries, out / MANIFEST_NAME, report)

    # 5. Human review, then publish what was approved. The exit status stays about processing.
    from datetime import timedelta

    from .local_jobs import review_items_for_jobs
    from .review.local_flow import ReviewMode, review_run

    def show_link(link: str, email: str) -> None:
        console.print(f"[bold]Review link[/] (also in {email}):")
        console.print(link, soft_wrap=True, highlight=False, markup=False)  # unwrapped: it must stay clickable
        console.print(f"Waiting up to {review_timeout} s for the decisions... (Ctrl-C ends the review)")

    try:
        outcome = review_run(
            out,
            manifest,
            ReviewMode(review.value),
            reviewer=reviewer,
            timeout=timedelta(seconds=review_timeout),
            port=review_port,
            extra_items=review_items_for_jobs(entries, out),
            on_link=show_link,
        )
    except ValueError as error:  # e.g. an invalid --reviewer address
        raise _usage_error(str(error)) from error
    console.print(outcome.summary())
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def _print_summary(entries: list[ManifestEntry], manifest: Path, report: Path) -> None:
    failed = [e for e in entries if e.status is Status.FAILED]
    reused = sum(e.reused for e in entries)
    warned = sum(1 for e in entries if e.status is Status.SUCCEEDED and e.checks)
    if failed:
        table = Table(title=f"{len(failed)} file(s) failed", show_lines=False)
        table.add_column("File", overflow="fold")
        table.add_column("Code")
        table.add_column("Reason", overflow="fold")
        for entry in failed:
            assert entry.error is not None
            table.add_row(entry.source, entry.error.code, entry.error.message)
        console.print(table)
    console.print(
        f"[green]{len(entries) - len(failed)} succeeded[/] ({reused} reused, {warned} with flags), "
        f"[red]{len(failed)} failed[/]."
    )
    console.print(f"Manifest: {manifest}\nReport:   {report}")


@app.command()
def examples(
    directory: Annotated[Path, typer.Argument(help="Folder to write the example photos into.")],
) -> None:
    """Render synthetic studio product photos (one sub-folder per SKU) to try `catalog run` on."""
    from .synthetic_photos import write_example_photos

    written = write_example_photos(directory)
    console.print(f"Wrote {len(written)} files under {directory}")


@app.command()
def schemas(
    directory: Annotated[Path, typer.Argument(help="Folder to write the JSON Schemas into.")],
) -> None:
    """Write the JSON Schema of every contract (sidecar, manifest, job request/result, review, brand profile)."""
    from schemas.export import write_json_schemas

    for path in write_json_schemas(directory):
        console.print(str(path))


if __name__ == "__main__":  # pragma: no cover
    app()
