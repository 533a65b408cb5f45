"""`catalog shopify`: the webhook endpoint on this machine, and backfilling existing products."""

import typer

shopify_app = typer.Typer(help="Shopify in and out: webhooks start the pipeline, approved images go back.", no_args_is_help=True)
