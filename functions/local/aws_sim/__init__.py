"""`catalog run --runtime aws-sim`: the AWS flow itself on this machine, deploying nothing.

moto runs in this process (S3, SQS, DynamoDB, Step Functions executing the synthesized state machine, SNS, SES,
Secrets Manager, the SageMaker runtime); the stack's resources are created from the synthesized template; the real
handlers run in-process (the state machine's Lambda tasks arrive through moto's Lambda invoke, routed to the handler
the template names for each function); the in-process GPU worker stands in for the async endpoint. OUT ends up as the
local runtime writes it, plus the digest email SES sent (`outbox/`) and the Lambdas' logs (`.aws-sim/lambda.log`).

The parts: `stack` (the template), `resources` and `deployment` (into moto), `sandbox` (process set-up), `lambdas`
(the handlers), `endpoint` (GPU jobs), `driver` (the flow), `review` (digest email; auto, local, none), `outputs` (OUT).
"""

import dataclasses
import importlib.util
import os
import shutil
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from functions.adapters.aws import settings as aws_settings
from functions.adapters.aws.settings.gpu_jobs import GpuJobSettings
from functions.adapters.aws.settings.ingest import IngestSettings
from functions.adapters.aws.settings.prepare import PrepareSettings
from functions.adapters.aws.settings.publish import PublishSettings
from functions.adapters.aws.settings.review import ReviewSettings
from functions.errors import ConfigurationError
from functions.local.aws_sim import sandbox
from functions.local.aws_sim.deployment import deploy
from functions.local.aws_sim.driver import FlowDriver, bucket_and_prefix, upload_brand_store, upload_photos
from functions.local.aws_sim.endpoint import GpuEndpoint
from functions.local.aws_sim.lambdas import LambdaFunctions
from functions.local.aws_sim.outputs import OutputWriter
from functions.local.aws_sim.review import decide, review_api_if_local, s3_object_server
from functions.local.aws_sim.stack import synthesize
from functions.local.discovery import InputPhoto
from functions.local.manifest import load_previous_manifest, remove_stale_outputs
from functions.local.report import write_report
from functions.local.runner import REPORT_NAME, FinishedRun, Progress, RunSettings, ShowLink, write_manifest
from functions.review.local_flow import ReviewMode, ReviewOptions

INSTALL = "pip install -e '.[aws-sim]'"
SIM_STATE_DIR = ".aws-sim"
# What the sim imports beyond the base install: moto (with its Step Functions parser), the CDK and cdk-nag.
_NEEDED_MODULES = ("moto", "antlr4", "jsonpath_ng", "aws_cdk", "constructs", "cdk_nag")


def check_aws_sim_installed() -> None:
    """A clear ConfigurationError naming the install command when the aws-sim extra (or node) is missing."""
    missing = [name for name in _NEEDED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(f"--runtime aws-sim needs the aws-sim extra ({', '.join(missing)} missing): {INSTALL}")
    if shutil.which("node") is None:
        raise ConfigurationError(
            f"--runtime aws-sim synthesizes the CDK app with Node.js: install node, then {INSTALL}"
        )


def run_overrides(settings: RunSettings, review: ReviewOptions, review_url: str | None) -> dict[str, str]:
    """The run's choices over the stack's defaults, by the handlers' variable names (set even if the template has
    no such variable yet)."""
    from functions.stages.background.rembg_engine import default_models_dir

    overrides = {
        "BACKGROUND_SPEC": settings.background,
        "PACKSHOT_PRESET": settings.preset,
        "PACKSHOT_SIZE": str(settings.size),
        "PACKSHOT_FILL_RATIO": repr(settings.fill_ratio),
        "PACKSHOT_FORMAT": settings.output_format or "",
        "PACKSHOT_QUALITY": str(settings.quality),
        "DEFAULT_JOBS": ",".join(kind.value for kind in settings.jobs),
        "MAX_MEGAPIXELS": repr(settings.limits.max_pixels / 1_000_000),
        "CATALOG_MODELS_DIR": str(settings.models_dir or default_models_dir()),
        "COMMERCIAL": "true" if settings.commercial else "false",
        "REVIEWERS": ",".join(settings.reviewers),
        "MAX_PIXEL_DIFFERENCE": str(settings.max_pixel_difference),
    }
    if review_url is not None:
        # The link lives as long as the run waits for it (the settings' floor is 10 minutes), and the person is at
        # the terminal: no reminder email while the run waits.
        seconds = max(600, int(review.timeout.total_seconds()))
        overrides |= {
            "REVIEW_BASE_URL": review_url,
            "REVIEW_LINK_TTL_SECONDS": str(seconds),
            "REVIEW_REMIND_BEFORE_SECONDS": "0",
        }
    return overrides


def _enter_sim_process(cleanup: ExitStack) -> None:
    """moto in this process, fake credentials, boto3's S3 endpoint on loopback (so presigned review image URLs open
    in a browser; moto still answers every boto3 call to it in-process) and fresh handler caches, all undone after."""
    scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="catalog-aws-sim.")))
    s3_endpoint = cleanup.enter_context(s3_object_server())
    loopback_s3 = {"AWS_ENDPOINT_URL_S3": s3_endpoint.url, "MOTO_S3_CUSTOM_ENDPOINTS": s3_endpoint.url}
    cleanup.enter_context(sandbox.environment(loopback_s3, scratch))
    cleanup.enter_context(sandbox.moto_services())
    cleanup.enter_context(sandbox.fresh_handler_caches())


def run_on_aws_sim(
    input_root: Path,
    photos: list[InputPhoto],
    out_dir: Path,
    settings: RunSettings,
    review_options: ReviewOptions,
    progress: Progress,
    on_link: ShowLink,
) -> FinishedRun:
    """Run the batch through the AWS flow in moto and write OUT as the local runtime does."""
    # 1. The extra is installed; the stack is synthesized (once per process).
    check_aws_sim_installed()
    stack = synthesize()
    started, previous = datetime.now(UTC), load_previous_manifest(out_dir)

    with ExitStack() as cleanup:
        # 2. moto and the process set-up the handlers expect, undone when the run ends.
        _enter_sim_process(cleanup)

        # 3. The stack's resources, every function's environment from the template with the run's choices on top,
        #    the handlers behind moto's Lambda invoke and the GPU worker behind its InvokeEndpointAsync.
        deployment = deploy(stack)
        functions = LambdaFunctions(deployment.routes, deployment.memory, concurrency=settings.workers)
        stage = urlsplit(deployment.environment.get("REVIEW_BASE_URL", "")).path.strip("/") or "review"
        review_url = cleanup.enter_context(review_api_if_local(functions, review_options, stage))
        os.environ.update(deployment.environment | run_overrides(settings, review_options, review_url))
        intake, prepare, publish, gpu, review = (
            aws_settings.load(kind)
            for kind in (IngestSettings, PrepareSettings, PublishSettings, GpuJobSettings, ReviewSettings)
        )
        cleanup.enter_context(sandbox.lambda_logs(out_dir / SIM_STATE_DIR / "lambda.log", functions.modules()))
        job_buckets = (gpu.work_bucket, bucket_and_prefix(prepare.brands_uri)[0])
        endpoint = GpuEndpoint(deployment.endpoint, settings.models, gpu.jobs_table_name, job_buckets)
        cleanup.enter_context(functions.attached_to_moto())
        cleanup.enter_context(endpoint.attached_to_moto())
        driver = FlowDriver(deployment, functions, endpoint, progress)
        cleanup.callback(driver.stop_running_executions)  # before moto stops

        # 4. The brand store, each SKU's product.json, then the photos (conditional puts); S3 notifies SQS.
        brand = settings.brand.resolved.brand
        upload_brand_store(settings, prepare.brands_uri)
        uploaded = upload_photos(photos, deployment.intake.bucket, intake.intake_prefix, brand)
        intake_root = f"s3://{deployment.intake.bucket}/{intake.intake_prefix}{brand}/"
        writer = OutputWriter(out_dir, settings, driver, uploaded, intake_root, prepare.brands_uri)
        driver.on_prepared = lambda key: progress.photo_done(writer.progress_entry(key))

        # 5. SQS -> ingest -> one execution per photo; what ingest dropped (zero-byte files) is reported now.
        driver.deliver_intake_notifications()
        driver.discover_executions()
        for photo in writer.not_executed(photos):
            progress.photo_done(writer.entry(photo))

        # 6. prepare runs in the executions; then the GPU jobs, one at a time here, until every image awaits review.
        driver.advance(until=driver.all_prepared)
        progress.start_jobs(driver.gpu_job_count())
        if driver.gpu_job_count() and settings.models is None:  # a product.json asked for them: as the local runtime
            raise ConfigurationError(
                "GPU jobs need --models: `tiny` (random tiny models, to try the flow) or a config file."
            )
        driver.gpu_jobs_running = True
        driver.advance(until=driver.all_awaiting_review)

        # 7. Review: the digest email, then auto / local / none; each decided review resumes its execution (publish).
        outcome = decide(driver, functions, review_options, out_dir, review.review_base_url, on_link)
        driver.advance(until=driver.all_finished)

        # 8. OUT like the local runtime: the files and an entry per photo; approved/, feedback/, published.jsonl.
        entries = writer.entries(photos)
        if outcome.mode is not ReviewMode.NONE and outcome.state is not None:
            published = writer.bring_home_published(
                publish.output_bucket, publish.approved_prefix, publish.feedback_prefix, brand
            )
            outcome = dataclasses.replace(outcome, publish=published)

    # 9. The manifest and the report.
    remove_stale_outputs(out_dir, previous, entries)
    manifest = write_manifest(out_dir, input_root.resolve(), settings, started, entries)
    report = write_report(out_dir, manifest, REPORT_NAME)
    return FinishedRun(manifest, report, outcome)
