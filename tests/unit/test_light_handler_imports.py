"""What each Lambda handler loads at its cold start: no ML or image stack, no X-Ray SDK with tracing off, and only
the contracts and stages it uses. Not timed (bench/bench_cold_start.py measures); these fail when an eager import
comes back.
"""

import importlib
import importlib.util
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
    # Only ExecutionInput, not the workflow's other contracts (nor review's they pull in); partial batch responses
    # without Powertools' batch utility (its async processor's asyncio, every event class, its parser models).
    "ingest": (
        "schemas.workflow",
        "schemas.review",
        "aws_lambda_powertools.utilities.batch",
        "aws_lambda_powertools.utilities.parser.models",
        "asyncio",
    ),
    # Starts images as ingest does, without ingest's SQS batch utility.
    "backfill_batch": ("functions.handlers.ingest", "aws_lambda_powertools.utilities.batch"),
    # Verify and queue: not the publishing stage (nor its contracts), which intake shares only a file-name rule with.
    "shopify_webhook": ("functions.stages.shopify_publish", "functions.stages.publish", "schemas.review"),
    # Partial batch responses without Powertools' batch utility, as ingest.
    "shopify_ingest": (
        "aws_lambda_powertools.utilities.batch",
        "aws_lambda_powertools.utilities.parser.models",
        "asyncio",
        "functions.stages.shopify_publish",
    ),
    # Shopify publishing only where a store is connected.
    "publish": ("functions.stages.shopify_publish", "functions.adapters.aws.shopify_admin"),
    # The checks' ReviewRequest lives with the review contracts: not the workflow's other payloads, nor the jobs'.
    "review_notify": ("schemas.workflow", "schemas.jobs"),
    # argparse is for the signing command line only; the review page for review_api only.
    "review_schedule": ("argparse", "functions.review.page"),
    # GpuJobTask lives beside JobRequest: not the workflow's other payloads, nor the review contracts they carry.
    "submit_gpu_job": ("schemas.workflow", "schemas.review"),
    # Four routes matched in the handler: Powertools' event handler package loads every resolver it has (AppSync's
    # asyncio, ALB, VPC Lattice, Bedrock, their event classes), ~0.35x the floor.
    "review_api": ("aws_lambda_powertools.event_handler", "asyncio"),
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


SETTINGS_PACKAGE = "functions.adapters.aws.settings"


def test_ingest_builds_only_its_own_settings_classes():
    # Given a fresh interpreter
    # When the ingest handler module is imported, as its cold Lambda does
    loaded = _modules_after_importing("functions.handlers.ingest")
    # Then its own settings module came with it, and no other handler's (each costs its classes' creation)
    assert f"{SETTINGS_PACKAGE}.ingest" in loaded
    assert not loaded & {f"{SETTINGS_PACKAGE}.review", f"{SETTINGS_PACKAGE}.prepare"}


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_handler_loads_no_settings_module_but_its_own(handler):
    # Given the settings module that declares the handler's SETTINGS
    own = importlib.import_module(f"functions.handlers.{handler}").SETTINGS.__module__
    # When the handler module is imported in a fresh interpreter
    loaded = _modules_after_importing(f"functions.handlers.{handler}")
    # Then that is the only per-handler settings module it loaded
    assert {module for module in loaded if module.startswith(f"{SETTINGS_PACKAGE}.")} == {own}


def test_submit_gpu_job_validates_its_task_without_powertools_parser():
    # Given a fresh interpreter with the submit handler imported
    code = (
        "import sys\n"
        "from functions.handlers import submit_gpu_job\n"
        "try:\n    submit_gpu_job.parse_request({'task_token': 't', 'attempt': 0})\n"
        "except Exception as error:\n    print(type(error).__name__)\n"
        "print('aws_lambda_powertools.utilities.parser' in sys.modules)"
    )
    # When it validates a task (here one without its job, which is refused)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout.split()
    # Then pydantic refused it, and Powertools' parser package (~15 ms of a cold start) was never loaded
    assert out == ["ValidationError", "False"]


def _bench_cold_start():
    spec = importlib.util.spec_from_file_location("bench_cold_start", REPO_ROOT / "bench" / "bench_cold_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cold_start_bench_knows_every_light_handlers_first_request():
    # Given the benchmark's table of what each light handler's usual first request loads and builds
    first_request = _bench_cold_start().FIRST_REQUEST

    # Then every light handler has an entry (a new handler is measured with its first request, not its import only)
    assert sorted(first_request) == LIGHT
    # And every module it names imports and every contract it names is a pydantic model
    for entries in first_request.values():
        for entry in entries:
            module, _, model = entry.partition(":")
            imported = importlib.import_module(module)
            assert not model or hasattr(getattr(imported, model), "model_rebuild"), entry


def test_a_packshot_only_photo_is_checked_without_the_pixel_stack():
    # Given a fresh interpreter and a photo prepared with its packshot only (the stack's default jobs)
    prefix = "s3://catalog-work/prepared/0123456789abcdef/"
    prepared = {
        "image_id": "0123456789abcdef",
        "brand": {"brand": "acme"},
        "sku": "SKU-1",
        "source": "s3://catalog-intake/incoming/acme/SKU-1/front.jpg",
        "filename": "front.jpg",
        "publish_stem": "SKU-1/front",
        "content_sha256": "cd" * 32,
        "intake": {"detected_format": "JPEG", "width": 48, "height": 40, "mode": "RGB"},
        "cutout": {"engine": "backdrop", "confidence": 0.97, "low_confidence": False, "coverage": 0.3},
        "files": {"cutout": f"{prefix}cutout.png", "mask": f"{prefix}mask.png", "packshot": f"{prefix}packshot.jpg"},
        "reviewers": ["buyer@acme.example"],
    }
    code = (
        "import json, sys\n"
        "from functions.handlers import automatic_checks\n"
        "from functions.stages.review_items import review_items\n"
        "from schemas import PreparedImage\n"
        "items = review_items(PreparedImage.model_validate(json.loads(sys.argv[1])), (), read_image=None)\n"
        "print(len(items), items[0].job_kind, 'numpy' in sys.modules, 'PIL' in sys.modules)"
    )

    # When the checks make its review items, as the checks Lambda's usual request does
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(prepared)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "POWERTOOLS_TRACE_DISABLED": "1"},
    ).stdout.split()

    # Then its one packshot item is made, and neither numpy nor Pillow was loaded (~1.1x the light floor)
    assert out == ["1", "packshot", "False", "False"]
