"""`catalog train dataset`: quality gates and captions for a brand's training photos."""

import typer

dataset_app = typer.Typer(help="Check a folder of training photos and write the dataset.", no_args_is_help=True)
