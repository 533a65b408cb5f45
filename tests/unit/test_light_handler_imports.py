"""What each Lambda handler loads at its cold start: no ML or image stack, no X-Ray SDK with tracing off, and only
the contracts and stages it uses. Not timed (bench/bench_cold_start.py measures); these fail when an eager import
comes back.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

HANDLERS = sorted(path.stem for path in (REPO_ROOT / "functions" / "handlers").glob("*.py") if path.stem[0] != "_")
LIGHT = [name for name in HANDLERS if name != "prepare"]  # prepare is the container image with the image stack
HEAVY = ("torch", "diffusers", "transformers", "peft", "rembg", "cv2", "onnxruntime")

# Handler -> modules it must not import at module level.
NOT_AT_IMPORT = {
    # Only ExecutionInput, not the workflow's other contracts (nor review's they pull in); the batch utility imported
    # before pydantic, so Powertools does not build its pydantic parser models too.
    "ingest": ("schemas.workflow", "schemas.review", "aws_lambda_powertools.utilities.parser.models"),
    # Starts images as ingest does, without ingest's SQS batch utility.
    "backfill_batch": ("functions.handlers.ingest", "aws_lambda_powertools.utilities.batch"),
    # Verify and queue: not the publishing stage (nor its contracts), which intake shares only a file-name rule with.
    "shopify_webhook": ("functions.stages.shopify_publish", "functions.stages.publish", "schemas.review"),
    # The batch utility imported before pydantic, so Powertools does not build its pydantic parser models too.
    "shopify_ingest": ("aws_lambda_powertools.utilities.parser.models", "functions.stages.shopify_publish"),
    # Shopify publishing only where a store is connected.
    "publish": ("functions.stages.shopify_publish", "functions.adapters.aws.shopify_admin"),
    # argparse is for the signing command line only; the review page for review_api only.
    "review_schedule": ("argparse", "functions.review.page"),
}


def _modules_after_importing(*modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing these, with tracing off as in tests and `catalog run`."""
    code = (
        "import importlib, json, sys\n"
        "for module in sys.argv[1:]:\n    importlib.import_module(module)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "POWERTOOLS_TRACE_DISABLED": "1"},
    ).stdout
    return set(json.loads(out))


def test_light_handlers_import_no_ml_stack_and_no_xray_sdk_with_tracing_off():
    # Given a fresh interpreter with tracing disabled
    # When every light handler module is imported, as their cold Lambdas do
    loaded = _modules_after_importing(*(f"functions.handlers.{name}" for name in LIGHT))
    # Then neither the ML stack nor the X-Ray SDK came with them
    assert not {module.split(".")[0] for module in loaded} & {*HEAVY, "aws_xray_sdk"}


@pytest.mark.parametrize("handler", sorted(NOT_AT_IMPORT))
def test_a_handler_imports_only_what_it_uses(handler):
    # Given a fresh interpreter
    # When the handler module is imported
    loaded = _modules_after_importing(f"functions.handlers.{handler}")
    # Then what it does not use at every invocation stays out of its cold start
    assert not loaded & set(NOT_AT_IMPORT[handler])
