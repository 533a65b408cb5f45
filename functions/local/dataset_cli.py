"""`catalog train dataset`: quality gates and captions for a brand's training photos.

catalog train dataset check PHOTOS --out DS --brand acme [--trigger-token sks] [--feedback OUT ...]
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from functions.errors import CatalogError, ConfigurationError
from functions.stages.dataset import (
    DEFAULT_CAPTION_TEMPLATE,
    CandidatePhoto,
    CheckOptions,
    DatasetCheck,
    DatasetGates,
    check_brand,
    check_caption_template,
    check_out_folder,
    check_trigger_token,
    require_imagehash,
)
from schemas.dataset import DatasetPhoto, PhotoOrigin, PhotoVerdict

dataset_app = typer.Typer(help="Check a folder of training photos and write the dataset.", no_args_is_help=True)
console = Console(stderr=True)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def _shown(text: object, keep_newlines: bool = False) -> str:
    """File names, sidecar text and messages as typed, never as markup or terminal control sequences."""
    from functions.local.cli import terminal_text  # here, not at the top: cli.py mounts this module

    return escape(terminal_text(str(text), keep_newlines))


def _usage_error(message: str) -> typer.Exit:
    console.print(f"[bold red]Error:[/] {_shown(message)}")
    return typer.Exit(EXIT_USAGE)


def _feedback_uris(paths: list[str], brand: str) -> tuple[object, list[str]]:
    """The storage port and URIs for `--feedback` values: local files or folders, or `s3://` objects or prefixes."""
    from functions.stages.feedback import FEEDBACK_DIR, feedback_file
    from functions.stages.publish import safe_name

    if any(path.startswith("s3://") for path in paths):
        if not all(path.startswith("s3://") for path in paths):
            raise ConfigurationError("--feedback values must be all local or all s3:// in one check.")
        import boto3

        from functions.adapters.aws.s3_storage import S3Storage

        uris = [
            p if p.endswith(".jsonl") else f"{p.rstrip('/')}/{FEEDBACK_DIR}/{safe_name(brand)}.jsonl" for p in paths
        ]
        return S3Storage(boto3.client("s3")), uris
    from functions.adapters.local.files import FileStorage, file_uri

    files = [feedback_file(Path(path), brand).absolute() for path in paths]
    for path in paths:
        if not Path(path).exists():
            raise ConfigurationError(f"--feedback {path}: no such file or folder.")
    return FileStorage([file.parent for file in files]), [file_uri(file) for file in files]


@dataset_app.command()
def check(
    photos_dir: Annotated[
        Path, typer.Argument(metavar="PHOTOS", help="The brand's photos: SKU sub-folders with product.json, or loose.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The dataset folder (replaced whole on success).")],
    brand: Annotated[str, typer.Option(help="The brand this dataset trains; its feedback records are read.")],
    trigger_token: Annotated[
        str | None, typer.Option(help="A rare word the adapter learns the brand by; starts every caption.")
    ] = None,
    min_side: Annotated[
        int, typer.Option(min=64, help="Shorter side (px) a photo must have as shot; upscaling never counts.")
    ] = 1024,
    bucket_resolution: Annotated[
        int, typer.Option(min=256, help="Training buckets hold about this many pixels squared (SDXL: 1024).")
    ] = 1024,
    min_sharpness: Annotated[
        float, typer.Option(min=0, help="Blur gate: Laplacian variance on the product, in % of its gradient energy.")
    ] = DatasetGates().min_sharpness,
    duplicate_distance: Annotated[
        int, typer.Option(min=0, max=64, help="Near-duplicate gate: perceptual-hash Hamming distance.")
    ] = DatasetGates().duplicate_distance,
    duplicate_colour_de: Annotated[
        float,
        typer.Option(min=0, help="...and colours this close (mean CIELAB ΔE): a recoloured product is no duplicate."),
    ] = DatasetGates().duplicate_colour_de,
    min_product_share: Annotated[
        float, typer.Option(min=0, max=1, help="Coverage gate: the product's share of the frame, at least.")
    ] = DatasetGates().min_product_share,
    max_edge_contact: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="Cut-off gate: the largest share of one frame edge the product may touch (raise it "
            "for on-model shots cropped at the legs).",
        ),
    ] = DatasetGates().max_edge_contact,
    caption_template: Annotated[
        str,
        typer.Option(help="Caption from the sidecar: {trigger_token} {title} {category} {colour} {collection} {sku}."),
    ] = DEFAULT_CAPTION_TEMPLATE,
    captioner: Annotated[
        Path | None,
        typer.Option(help="A local BLIP captioning model folder (never downloaded); its words follow the template's."),
    ] = None,
    feedback: Annotated[
        list[str] | None,
        typer.Option(
            help="Review feedback to read: a `catalog run` output folder, its feedback/<brand>.jsonl, or s3://. "
            "Repeatable."
        ),
    ] = None,
    include_approved: Annotated[
        list[Path] | None,
        typer.Option(help="Also check the approved generated images a `catalog run` published there. Repeatable."),
    ] = None,
    background: Annotated[
        str, typer.Option(help="The product-mask engine, as `catalog run`: backdrop | rembg | rembg:<model>.")
    ] = "backdrop",
) -> None:
    """Check PHOTOS for training: every photo kept or refused with its reasons, captions, buckets, a report."""
    from functions.local.discovery import discover_inputs
    from functions.stages.background import background_remover_from_spec
    from functions.stages.dataset import DatasetRefusedError, check_dataset, load_captioner
    from functions.stages.dataset_report import write_report
    from functions.stages.feedback import approved_generated, read_feedback

    # 1. check the arguments before touching anything
    if not photos_dir.is_dir():
        raise _usage_error(f"PHOTOS {photos_dir} is not a folder.")
    try:
        gates = DatasetGates(
            min_side=min_side,
            bucket_resolution=bucket_resolution,
            min_sharpness=min_sharpness,
            duplicate_distance=duplicate_distance,
            duplicate_colour_de=duplicate_colour_de,
            min_product_share=min_product_share,
            max_edge_contact=max_edge_contact,
        )
        require_imagehash()
        check_brand(brand)
        check_caption_template(caption_template)
        check_trigger_token(trigger_token)
        check_out_folder(out, photos_dir)
        for folder in include_approved or []:
            if not folder.is_dir():
                raise ConfigurationError(f"--include-approved {folder}: no such folder.")
        storage, feedback_uris = _feedback_uris(feedback or [], brand)
        remover = background_remover_from_spec(background)
        caption_model = load_captioner(captioner) if captioner else None
    except (ConfigurationError, CatalogError) as error:
        raise _usage_error(error.message if isinstance(error, CatalogError) else str(error)) from error

    # 2. the photos, the opted-in approved images, and the brand's rejections
    candidates = [
        CandidatePhoto(
            photo.path,
            photo.source,
            photo.sku,
            photo.sidecar,
            photo.sidecar_error.message if photo.sidecar_error else None,
        )
        for photo in discover_inputs(photos_dir, exclude=out)
    ]
    notes: list[str] = []
    for folder in include_approved or []:
        approved, problems = approved_generated(folder)
        notes.extend(problems)
        candidates.extend(
            CandidatePhoto(a.path, a.source, a.sku, origin=PhotoOrigin.APPROVED_GENERATED) for a in approved
        )
    if not candidates:
        raise _usage_error(f"no files found under {photos_dir}.")
    read = read_feedback(storage, feedback_uris, brand) if feedback_uris else None  # type: ignore[arg-type]
    if read is not None:
        notes.extend(read.problems)

    # 3. the gates, and the dataset written aside then swapped in (unless refused)
    options = CheckOptions(brand=brand, gates=gates, trigger_token=trigger_token, caption_template=caption_template)
    with Progress(
        TextColumn("[bold]Checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("check", total=len(candidates))
        try:
            result = check_dataset(
                candidates,
                out,
                options,
                remover,
                failure_cases=read.cases if read else (),
                captioner=caption_model,
                warnings=notes,
                on_assessed=lambda _: progress.advance(task),
                write_report=write_report,
            )
        except DatasetRefusedError as error:
            progress.stop()
            console.print(f"[bold red]Refused:[/] {_shown(error.message)}")
            raise typer.Exit(EXIT_REFUSED) from error

    # 4. say what happened
    _print_summary(result, out)
    raise typer.Exit(EXIT_OK if result.written else EXIT_REFUSED)


def _reasons(photo: DatasetPhoto) -> str:
    return "\n".join(f"{finding.code}: {finding.message}" for finding in photo.findings)


def _print_summary(result: DatasetCheck, out: Path) -> None:
    manifest = result.manifest
    table = Table(title=f"Dataset check: {_shown(manifest.brand)}", show_lines=True)
    table.add_column("Photo", overflow="fold")
    table.add_column("Verdict")
    table.add_column("Reasons", overflow="fold")
    table.add_column("Bucket")
    for photo in manifest.photos:
        verdict = "[green]kept[/]" if photo.verdict is PhotoVerdict.KEPT else "[red]refused[/]"
        bucket = f"{photo.bucket[0]}x{photo.bucket[1]}" if photo.bucket else ""
        source = _shown(photo.source) + ("" if photo.origin is PhotoOrigin.PHOTO else " (approved generated)")
        table.add_row(source, verdict, _shown(_reasons(photo), keep_newlines=True), bucket)
    console.print(table)
    kept = len(manifest.kept)
    if manifest.buckets:
        plan = ", ".join(f"{key}: {count}" for key, count in manifest.buckets.items())
        console.print(f"Bucket plan: {plan}")
    if result.duplicate_groups:
        console.print(f"Duplicate groups: {len(result.duplicate_groups)}")
    if manifest.failure_cases:
        from functions.stages.feedback import by_reason

        counts = ", ".join(
            f"{reason.value} {len(cases)}" for reason, cases in by_reason(manifest.failure_cases).items()
        )
        console.print(f"Failure log: {len(manifest.failure_cases)} rejected generated images ({counts})")
    for warning in manifest.warnings:
        console.print(f"[yellow]Warning:[/] {_shown(warning)}")
    if result.written:
        console.print(
            f"[bold green]{kept} of {len(manifest.photos)} photos kept.[/] Dataset: {_shown(out / 'dataset.json')}; "
            f"report: {_shown(out / 'report.html')}; edit captions in {_shown(out / 'images')}/*.txt"
        )
    else:
        console.print(f"[bold red]Refused:[/] {_shown(result.refusal)}")
