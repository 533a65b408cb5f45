"""Builds the app the same way for the CDK CLI and for the tests (which pass cdk.json's context themselves)."""

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from .config import DeployConfig
from .stack import CatalogStack

STACK_NAME = "CatalogImageProcessor"
CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"


def default_context() -> dict[str, Any]:
    """cdk.json's context, for callers that do not go through the CDK CLI."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text(encoding="utf-8"))["context"]
    return context


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    app = cdk.App(context=context, outdir=outdir)
    config = DeployConfig.from_context(app.node)
    CatalogStack(app, STACK_NAME, config=config)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app
