"""`catalog shopify`: the webhook endpoint on this machine, and backfilling existing products."""

import contextlib
import json
import re
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

shopify_app = typer.Typer(
    help="Shopify in and out: webhooks start the pipeline, approved images go back.", no_args_is_help=True
)
console = Console(stderr=True)
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$")
_BRAND = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")


def _brand_settings(brands: Path | None, brand: str) -> Any:
    """`<brands>/<brand>/shopify.json`, or the defaults when there is none."""
    from functions.errors import field_problems
    from schemas.shopify import SHOPIFY_SETTINGS_NAME, ShopifySettings

    if brands is None or not (brands / brand / SHOPIFY_SETTINGS_NAME).is_file():
        return ShopifySettings()
    path = brands / brand / SHOPIFY_SETTINGS_NAME
    try:
        return ShopifySettings.model_validate_json(path.read_bytes())
    except ValidationError as error:
        console.print(f"[red]{escape(str(path))}: {escape(field_problems(error))}[/red]")
        raise typer.Exit(2) from None


@shopify_app.command()
def serve(
    out: Annotated[Path, typer.Option("--out", help="Photos land in OUT/incoming/<brand>/<handle>/.")],
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            envvar="SHOPIFY_CLIENT_SECRET",
            help="The app's client secret (signs the webhooks).",
            show_default=False,
        ),
    ],
    brand: Annotated[str, typer.Option("--brand", help="Brand folder under incoming/.")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0 takes a free port.")] = 8787,
    previous_secret: Annotated[
        str | None,
        typer.Option(
            "--previous-secret",
            envvar="SHOPIFY_PREVIOUS_CLIENT_SECRET",
            help="The secret before a rotation, accepted too while this server runs.",
            show_default=False,
        ),
    ] = None,
    allow_image_host: Annotated[
        list[str] | None,
        typer.Option("--allow-image-host", help="HOST:PORT images may also come from (local testing); repeatable."),
    ] = None,
    brands: Annotated[
        Path | None, typer.Option("--brands", help="Brand store; <brands>/<brand>/shopify.json holds the settings.")
    ] = None,
) -> None:
    """Answer Shopify's products/create and products/update webhooks at http://127.0.0.1:PORT/webhooks/shopify.

    Each product's new images (by image id + content hash) are fetched into OUT/incoming/<brand>/<handle>/ with a
    product.json; `catalog run OUT/incoming/<brand> --out RESULTS` then processes them. Ctrl-C stops it.
    """
    from functions.adapters.local.shopify_server import LocalShopifyServer
    from functions.stages.shopify_intake import WebhookSecrets

    hosts = tuple(allow_image_host or ())
    bad = [host for host in hosts if not _HOST_PORT.match(host)]
    if bad:
        console.print(f"[red]--allow-image-host {escape(', '.join(bad))}: expected HOST:PORT[/red]")
        raise typer.Exit(2)
    if not _BRAND.match(brand):
        console.print(f"[red]--brand {escape(brand)!r}: lower-case letters, digits and '-', at most 64[/red]")
        raise typer.Exit(2)
    if not secret:
        console.print("[red]--secret is empty: give the app's client secret[/red]")
        raise typer.Exit(2)
    settings = _brand_settings(brands, brand)
    server = LocalShopifyServer(
        out,
        secrets=WebhookSecrets(current=secret, previous=previous_secret or None),
        brand=brand,
        settings=settings,
        extra_image_hosts=hosts,
        port=port,
        report=_print_line,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with server:
        # Tests and scripts read this line for the port.
        print(f"Listening on {server.url}", flush=True)
        console.print(f"Photos go to {escape(str(out.resolve() / 'incoming' / brand))}/<handle>/; Ctrl-C stops.")
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    console.print("Stopped.")


def _print_line(line: dict[str, Any]) -> None:
    console.print(escape(json.dumps({key: value for key, value in line.items() if key != "at"})))
