"""Synthesize the stack once per session (about 20 s on 2 cores) and share the template, the nag outcome and the
output folder with every infra test."""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CDK_DIR = Path(__file__).resolve().parents[2] / "cdk"
STACK_NAME = "CatalogImageProcessor"


@dataclass(frozen=True)
class Synthesized:
    template: dict[str, Any]
    outdir: Path
    nag_error: str | None
    stack: Any

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.template["Resources"].items() if r["Type"] == kind}

    def one_named(self, kind: str, part: str) -> tuple[str, dict[str, Any]]:
        """The one resource of `kind` whose logical id contains `part` (CDK logical ids carry the construct path)."""
        found = {name: r for name, r in self.resources(kind).items() if part in name}
        assert len(found) == 1, f"expected one {kind} named like {part!r}, found {sorted(found)}"
        return next(iter(found.items()))

    def one(self, kind: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(kind)
        assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
        return next(iter(found.items()))


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    pytest.importorskip("aws_cdk")
    pytest.importorskip("cdk_nag")
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    sys.path.insert(0, str(CDK_DIR))
    from catalog_infra.app import build_app, default_context

    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(default_context(), outdir=str(outdir))
    stack = app.node.find_child(STACK_NAME)
    nag_error = None
    try:
        app.synth()
    except Exception as error:  # ValidationFailed: the nag report is in the folder
        nag_error = str(error)
        report = outdir / "validation-report.json"
        if report.exists():
            nag_error += "\n" + report.read_text()
    template_file = outdir / f"{STACK_NAME}.template.json"
    if not template_file.exists():
        pytest.fail(f"synth produced no template: {nag_error}")
    return Synthesized(json.loads(template_file.read_text()), outdir, nag_error, stack)
