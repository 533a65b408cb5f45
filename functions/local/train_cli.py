"""`catalog train`: curate a brand's dataset (`dataset check`) and train its LoRA (`run`)."""

import typer

from functions.local.dataset_cli import dataset_app

train_app = typer.Typer(help="Curate a brand's photos and train its LoRA.", no_args_is_help=True)
train_app.add_typer(dataset_app, name="dataset")
