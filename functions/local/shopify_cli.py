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


# Options `serve` and `sync` share: both take images in the same way, with the same brand settings.
AllowImageHostOption = Annotated[
    list[str] | None,
    typer.Option("--allow-image-host", help="HOST:PORT images may also come from (local testing); repeatable."),
]
ShopifyBrandsOption = Annotated[
    Path | None, typer.Option("--brands", help="Brand store; <brands>/<brand>/shopify.json holds the settings.")
]


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
    allow_image_host: AllowImageHostOption = None,
    brands: ShopifyBrandsOption = None,
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


@shopify_app.command()
def sync(
    products: Annotated[
        str, typer.Option("--products", help="Product ids, gids or handles, comma-separated: ID[,ID...].")
    ],
    shop: Annotated[
        str, typer.Option("--shop", help="The store: acme.myshopify.com (or http://127.0.0.1:PORT, a test store).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Photos land in OUT/incoming/<brand>/<handle>/.")],
    brand: Annotated[str, typer.Option("--brand", help="Brand folder under incoming/.")],
    token_env: Annotated[
        str, typer.Option("--token-env", help="Environment variable holding the Admin API access token.")
    ] = "SHOPIFY_ADMIN_TOKEN",  # noqa: S107 (the variable's name, not a token)
    allow_image_host: AllowImageHostOption = None,
    brands: ShopifyBrandsOption = None,
) -> None:
    """Backfill existing products: read each through the Admin API and take its images in, as a webhook would.

    The same intake as `serve` (same OUT, same dedupe): images already taken in, and images we published, are
    skipped. Then `catalog run OUT/incoming/<brand> --review local --shopify-store SHOP` processes and publishes.
    """
    import os
    from urllib.parse import urlsplit

    from functions.adapters.local.files import FileStorage, file_uri
    from functions.adapters.local.shopify_store import SQLiteShopifyStore
    from functions.adapters.shopify.admin import ShopifyAdminClient, admin_base_url
    from functions.stages.shopify_backfill import backfill_work
    from functions.stages.shopify_intake import ImageFetcher, TransientFetchError, ingest_product
    from functions.stages.shopify_publish import ShopifyRefusedError

    references = [reference.strip() for reference in products.split(",") if reference.strip()]
    hosts = tuple(allow_image_host or ())
    problems = [f"--allow-image-host {h}: expected HOST:PORT" for h in hosts if not _HOST_PORT.match(h)]
    problems += [] if references else ["--products: give at least one product id or handle"]
    problems += [] if _BRAND.match(brand) else [f"--brand {brand!r}: lower-case letters, digits and '-', at most 64"]
    token = os.environ.get(token_env, "")
    problems += [] if token else [f"${token_env} is not set: it holds the store's Admin API access token"]
    try:
        base_url = admin_base_url(shop)
    except ValueError as error:
        problems.append(str(error))
    if problems:
        for problem in problems:
            console.print(f"[red]{escape(problem)}[/red]")
        raise typer.Exit(2)
    settings = _brand_settings(brands, brand)
    out = out.resolve()
    store = SQLiteShopifyStore(out / "shopify" / "intake.sqlite3")
    failed = 0
    try:
        with ShopifyAdminClient(shop, token) as admin:
            for reference in references:
                line: dict[str, Any] = {"stage": "sync", "product": reference}
                try:
                    work = backfill_work(admin, reference, brand, urlsplit(base_url).netloc)
                    if work is None:
                        line.update(outcome="product_not_found", detail=f"no product {reference!r} in the store")
                    else:
                        result = ingest_product(
                            work,
                            intake_root=file_uri(out / "incoming"),
                            store=store,
                            writer=FileStorage([out]),
                            fetcher=ImageFetcher(settings, hosts),
                            settings=settings,
                        )
                        line.update(outcome=result.outcome, folder=result.folder, images=result.counts())
                except (ShopifyRefusedError, TransientFetchError) as error:
                    line.update(outcome="failed", detail=str(error))
                failed += line["outcome"] in ("failed", "product_not_found")
                _print_line(line)
    finally:
        store.close()
    raise typer.Exit(1 if failed else 0)
