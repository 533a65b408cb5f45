"""`catalog review ...`: the owner's commands for a run's review batches (mounted by `functions.local.cli`)."""

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

review_app = typer.Typer(help="Human review of a run's outputs.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


@review_app.command()
def reissue(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The output folder of a `catalog run --review local`.")],
    review_id: Annotated[str | None, typer.Option(help="The expired batch (default: the latest one).")] = None,
    timeout: Annotated[int, typer.Option(min=10, help="Seconds the new link stays valid.")] = 1800,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on (default: a free one).")] = 0,
) -> None:
    """Send a new link for the images an expired review left undecided, wait for the decisions, publish."""
    from functions.local.cli import terminal_text
    from functions.review.local_flow import STATE_DIR, local_service, serve_and_wait

    def shown(text: object) -> str:  # names and messages as typed: no markup, no control sequence
        return escape(terminal_text(str(text), keep_newlines=True))

    if not (out / STATE_DIR / "reviews.sqlite").is_file():
        console.print(f"[bold red]Error:[/] no review found in {shown(out)}.")
        raise typer.Exit(2)
    service, resumer = local_service(out)
    store = service.store
    latest = store.latest() if hasattr(store, "latest") else None
    target = review_id or (latest.review_id if latest else None)
    if target is None:
        console.print(f"[bold red]Error:[/] no review found in {shown(out)}.")
        raise typer.Exit(2)
    try:
        task, params = service.reissue(target, timedelta(seconds=timeout))
    except (LookupError, ValueError) as error:
        console.print(f"[bold red]Error:[/] {shown(error)}")
        raise typer.Exit(2) from error

    def show(link: str, email: str) -> None:
        console.print(f"Review link (also in {shown(email)}):")
        console.print(link, soft_wrap=True, highlight=False, markup=False)
        console.print(f"Waiting up to {timeout} s for {len(task.items)} decision(s)... (Ctrl-C ends the review)")

    result = serve_and_wait(service, resumer, task, params, out, port, show)
    console.print(terminal_text(result.summary(), keep_newlines=True), markup=False)
