"""`catalog brand`: a brand's adapter versions, promotion and rollback."""

import typer

brand_app = typer.Typer(help="List, promote and roll back a brand's trained versions.", no_args_is_help=True)
