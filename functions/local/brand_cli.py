"""`catalog brand`: a brand's adapter versions, promotion and rollback.

catalog brand versions acme [--brands DIR|s3://bucket/brands/]
catalog brand promote acme ss27@v3 [--force --reason TEXT]
catalog brand rollback acme
"""

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from functions.stages.brand_versions import (
    BrandStoreError,
    PromotionGate,
    VersionStorage,
    latest_promotion,
    list_versions,
    promote,
    rollback,
)

brand_app = typer.Typer(help="List, promote and roll back a brand's trained versions.", no_args_is_help=True)
console = Console()

BrandsOption = Annotated[
    str | None,
    typer.Option(
        "--brands",
        help="The brand store: a folder or s3://bucket/prefix/ (default: $CATALOG_BRANDS_DIR or ./brands).",
        show_default=False,
    ),
]


def brand_store(brands: str | None, *, create: bool = False) -> tuple[VersionStorage, str]:
    """(storage, brands URI) for a folder or an `s3://` prefix; a missing folder is an error unless `create`."""
    store = brands or os.environ.get("CATALOG_BRANDS_DIR") or "brands"
    if store.startswith("s3://"):
        import boto3

        from functions.adapters.aws.s3_storage import S3Storage

        return S3Storage(boto3.client("s3")), store.rstrip("/") + "/"
    from functions.adapters.local.files import FileStorage, file_uri

    folder = Path(store)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise BrandStoreError(f"--brands {store}: no such folder")
    return FileStorage([folder]), file_uri(folder) + "/"


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/] {error}", markup=True, highlight=False)
    raise typer.Exit(code=2)


@brand_app.command()
def versions(brand: Annotated[str, typer.Argument(help="The brand, e.g. acme.")], brands: BrandsOption = None) -> None:
    """List the brand's registered versions and which one is active."""
    try:
        storage, brands_uri = brand_store(brands)
        found = list_versions(storage, brands_uri, brand)
        latest = latest_promotion(storage, brands_uri, brand)
    except BrandStoreError as error:
        _fail(error)
        return
    if not found:
        console.print(
            f"{brand} has no versions yet: train one with `catalog train run DS --brand {brand} --name NAME`."
        )
        return
    active = latest.version if latest is not None else None
    table = Table(title=f"{brand}: versions")
    for column in ("version", "created", "source", "steps", "dataset", "active"):
        table.add_column(column)
    for version in found:
        dataset = (version.dataset_sha256 or "")[:12]
        marker = "active" if version.ref == active else ""
        table.add_row(
            version.ref,
            version.created_at.isoformat(timespec="seconds"),
            version.source,
            str(version.steps or ""),
            dataset,
            marker,
        )
    console.print(table)
    if latest is not None:
        console.print(f"active: {active} ({latest.action.value} by {latest.actor} at {latest.at:%Y-%m-%d %H:%M} UTC)")


@brand_app.command("promote")
def promote_command(
    brand: Annotated[str, typer.Argument(help="The brand, e.g. acme.")],
    ref: Annotated[str, typer.Argument(help="The version to make active, e.g. ss27@v3.")],
    force: Annotated[bool, typer.Option("--force", help="Promote even if the promotion gate refuses.")] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why a forced promotion is right; recorded with it.")
    ] = None,
    brands: BrandsOption = None,
) -> None:
    """Make a version the one lifestyle and try-on jobs use (refused when the promotion gate finds a regression)."""
    if force and not (reason and reason.strip()):
        _fail(BrandStoreError("--force needs --reason TEXT: the reason is recorded with the promotion"))
    if reason is not None and not force:
        _fail(BrandStoreError("--reason is for a forced promotion: add --force, or leave --reason out"))
    try:
        storage, brands_uri = brand_store(brands)
        # The promotion gate: candidate vs active on the brand's validation set (functions/local/promotion_gate.py).
        from functions.local.promotion_gate import build_gate

        gate: PromotionGate | None = build_gate(storage, brands_uri, brand, say=console.print)
        if gate is None:
            console.print(f"note: {brand} keeps no validation set (validation.yaml), so no promotion gate ran.")
        record = promote(
            storage, brands_uri, brand, ref, gate=gate, force_reason=reason if force else None, actor=_actor()
        )
    except BrandStoreError as error:
        _fail(error)
        return
    previous = f" (was {record.previous})" if record.previous else ""
    console.print(f"{brand}: {record.version} is active{previous}.", highlight=False)
    if record.forced_reason:
        console.print(f"forced: {record.forced_reason}", highlight=False)


@brand_app.command("rollback")
def rollback_command(
    brand: Annotated[str, typer.Argument(help="The brand, e.g. acme.")], brands: BrandsOption = None
) -> None:
    """Return to the version that was active before the current one."""
    try:
        storage, brands_uri = brand_store(brands)
        record = rollback(storage, brands_uri, brand, actor=_actor())
    except BrandStoreError as error:
        _fail(error)
        return
    console.print(f"{brand}: {record.version} is active again (was {record.previous}).", highlight=False)
