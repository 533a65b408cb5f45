"""`catalog backfill`: feed what is already in S3 through the normal flow.

On AWS it starts the stack's backfill state machine (cdk/catalog_infra/backfill.py: a Distributed Map over the
listing or an S3 Inventory manifest) and shows its map run's counts; `--resume` redrives the last stopped or failed
run with the same input, or starts a new one (the intake ledger skips what is done either way). With `--runtime
aws-sim` it runs the same thing on this machine (functions/local/backfill_sim.py).
"""

import json
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from functions.errors import CatalogError, ConfigurationError

console = Console(stderr=True)
STACK_NAME = "CatalogImageProcessor"
AWS_POLL_SECONDS = 5.0
RESTARTABLE = ("FAILED", "ABORTED", "TIMED_OUT")
INTAKE_BRAND_FOLDER = "incoming/{brand}/"  # the stack's intake prefix (cdk/catalog_infra/storage.py), per brand


class BackfillRuntime(StrEnum):
    AWS = "aws"
    AWS_SIM = "aws-sim"


def counts_table(counts: dict[str, int], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in counts:
        table.add_column(name, justify="right")
    table.add_row(*(f"{value:,}" for value in counts.values()))
    return table


def _s3_uri(value: str, option: str) -> tuple[str, str]:
    parsed = urlparse(value)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise typer.BadParameter(f"{value!r}: expected s3://bucket/prefix", param_hint=option)
    return parsed.netloc, parsed.path.lstrip("/")


def backfill(
    source: Annotated[
        str,
        typer.Argument(
            metavar="S3_URI",
            help="s3://<intake bucket>/incoming/<brand>/[<sku>/...]: what to feed through (s3://intake/... names the "
            "stack's intake bucket).",
        ),
    ],
    brand: Annotated[str, typer.Option(help="The brand whose photos these are (incoming/<brand>/).")],
    inventory: Annotated[
        str | None,
        typer.Option(
            help="s3://<intake bucket>/inventory/.../manifest.json: read an S3 Inventory report, not a listing."
        ),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=1000, help="Batches at once (default: the deployment's, sized to the GPU endpoint)."),
    ] = None,
    runtime: Annotated[
        BackfillRuntime, typer.Option(help="aws: the deployed stack | aws-sim: the AWS flow on this machine.")
    ] = BackfillRuntime.AWS,
    resume: Annotated[
        bool, typer.Option(help="Continue the last stopped or failed backfill of this source (AWS: a redrive).")
    ] = False,
    stack_name: Annotated[str, typer.Option(help="The deployed stack (aws).")] = STACK_NAME,
    photos: Annotated[
        Path | None,
        typer.Option(help="aws-sim: a folder of photos put in the intake bucket first, with notifications off."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="aws-sim: where the sim's logs and outbox go.")] = Path(
        "backfill-out"
    ),
    stop_after_batches: Annotated[
        int | None,
        typer.Option(min=1, help="aws-sim: stop the backfill after N batches, then resume it (as --resume does)."),
    ] = None,
    jobs: Annotated[str, typer.Option(help="aws-sim: what to make for SKUs whose product.json names none.")] = (
        "packshot"
    ),
    models: Annotated[str | None, typer.Option(help="aws-sim: GPU job weights (`tiny` or a config).")] = None,
    size: Annotated[int, typer.Option(min=64, max=10000, help="aws-sim: packshot side in pixels.")] = 2000,
) -> None:
    """Feed images already in S3 through the normal flow: bounded, skipping what the intake ledger holds."""
    bucket, prefix = _s3_uri(source, "S3_URI")
    manifest = _s3_uri(inventory, "--inventory") if inventory else None
    try:
        if not (prefix or INTAKE_BRAND_FOLDER.format(brand=brand)).startswith(INTAKE_BRAND_FOLDER.format(brand=brand)):
            # Intake reads the brand and the SKU from the key: anything else would be dropped object by object.
            raise ConfigurationError(f"S3_URI: the prefix must lie under {INTAKE_BRAND_FOLDER.format(brand=brand)}")
        if runtime is BackfillRuntime.AWS_SIM:
            if resume:
                raise ConfigurationError(
                    "--resume: the sim's AWS world lives only as long as one command; use --stop-after-batches N "
                    "to stop a backfill and resume it in the same world."
                )
            if manifest is not None:
                raise ConfigurationError("--inventory: moto has no S3 Inventory; the sim backfills from a listing.")
            _backfill_on_sim(source, brand, photos, out, max_concurrency, stop_after_batches, jobs, models, size)
        else:
            _backfill_on_aws(bucket, prefix, brand, manifest, max_concurrency, resume, stack_name)
    except (ConfigurationError, CatalogError, ValueError) as error:
        message = error.message if isinstance(error, CatalogError) else str(error)
        console.print(f"[red]Error:[/] {message}", markup=True, highlight=False)
        raise typer.Exit(2) from error


def _backfill_on_sim(
    source: str,
    brand: str,
    photos_dir: Path | None,
    out: Path,
    max_concurrency: int | None,
    stop_after_batches: int | None,
    jobs: str,
    models: str | None,
    size: int,
) -> None:
    import os

    from functions.local.backfill_sim import BackfillCounts, SimBackfill
    from functions.local.discovery import discover_inputs
    from functions.local.runner import RunSettings
    from functions.stages.gpu_requests import parse_jobs

    settings = RunSettings(size=size, jobs=parse_jobs(jobs), models=models, workers=os.cpu_count() or 1)
    found = discover_inputs(photos_dir, exclude=out) if photos_dir is not None else []
    out.mkdir(parents=True, exist_ok=True)
    with SimBackfill(out, settings, max_concurrency) as sim:
        prefix = sim.resolve_source(source, brand)
        if found:
            console.print(f"{sim.seed(found, brand)} photos put in s3://intake/{prefix} (no notifications)")
        passes = [stop_after_batches, None] if stop_after_batches is not None else [None]
        for number, stop in enumerate(passes, start=1):
            title = "backfill" if len(passes) == 1 else ("backfill (stops)" if stop else "backfill (resumed)")
            with Live(counts_table(_shown(BackfillCounts()), title), console=console, transient=False) as live:
                run = sim.run(prefix, brand, _live_counts(live, title), stop)
            shown = ", ".join(f"{name} {value}" for name, value in _shown(run.counts).items())
            console.print(
                f"pass {number}: {shown}; {run.counts.batches} batches, {run.seconds:.1f} s, "
                f"{run.state_transitions} state transitions in the started images' executions"
                + (" (stopped)" if run.stopped else "")
            )
            for key, reason in run.counts.failures:
                console.print(f"  failed: {key}: {reason}", markup=False)
        console.print(f"{len(sim.published_keys())} images published (review: approved automatically in the sim)")


def _live_counts(live: Live, title: str) -> Any:
    return lambda counts: live.update(counts_table(_shown(counts), title))


def _shown(counts: Any) -> dict[str, int]:
    return {name: getattr(counts, name) for name in ("listed", "skipped", "started", "dropped", "done", "failed")}


def _backfill_on_aws(
    bucket: str,
    prefix: str,
    brand: str,
    manifest: tuple[str, str] | None,
    max_concurrency: int | None,
    resume: bool,
    stack_name: str,
) -> None:
    import boto3

    # 1. The stack's outputs: the backfill state machine and the intake bucket (`intake` names it).
    outputs = {
        output["OutputKey"]: output["OutputValue"]
        for output in boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]["Outputs"]
    }
    machine = next((v for k, v in outputs.items() if k.startswith("BackfillStateMachineArn")), None)
    intake = outputs.get("IntakeBucket")
    if machine is None or intake is None:
        raise ConfigurationError(f"stack {stack_name} has no backfill state machine: deploy the current cdk/ app")
    for name, used in (("S3_URI", bucket), ("--inventory", manifest[0] if manifest else intake)):
        if used not in ("intake", intake):
            raise ConfigurationError(f"{name}: the backfill reads the stack's intake bucket ({intake}), not {used}")
    prefix = prefix or INTAKE_BRAND_FOLDER.format(brand=brand)

    # 2. Resume the last run of this input (a redrive re-runs its unfinished batches), else start a new one.
    run_input: dict[str, Any] = {"prefix": prefix, "brand": brand}
    if manifest is not None:
        run_input["manifest_key"] = manifest[1]
    if max_concurrency is not None:
        run_input["max_concurrency"] = max_concurrency
    sfn = boto3.client("stepfunctions")
    execution = _resumable(sfn, machine, run_input) if resume else None
    if execution is not None:
        sfn.redrive_execution(executionArn=execution)
        console.print(f"redriving {execution}")
    else:
        name = f"backfill-{brand}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        execution = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(run_input))["executionArn"]
        console.print(f"started {execution}")

    # 3. The map run's item counts until the run ends (Ctrl-C leaves it running; --resume picks it up again).
    title = f"backfill of s3://{intake}/{prefix}"
    with Live(counts_table({"listed": 0}, title), console=console) as live:
        while True:
            status = sfn.describe_execution(executionArn=execution)["status"]
            runs = sfn.list_map_runs(executionArn=execution).get("mapRuns", [])
            if runs:
                items = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"])["itemCounts"]
                live.update(
                    counts_table(
                        {
                            "listed": items["total"],
                            "pending": items["pending"],
                            "running": items["running"],
                            "done": items["succeeded"],
                            "failed": items["failed"] + items["timedOut"] + items["aborted"],
                        },
                        title,
                    )
                )
            if status != "RUNNING":
                break
            time.sleep(AWS_POLL_SECONDS)
    console.print(
        f"{status}: per batch started / skipped counts are in s3://<work bucket>/backfill/results/ (ResultWriter)"
    )
    if status != "SUCCEEDED":
        raise typer.Exit(1)


def _resumable(sfn: Any, machine: str, run_input: dict[str, Any]) -> str | None:
    """The latest stopped or failed run with this input, if any (the ones a redrive continues)."""
    for execution in sfn.list_executions(stateMachineArn=machine, maxResults=20)["executions"]:
        if execution["status"] not in RESTARTABLE:
            continue
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if json.loads(described["input"]) == run_input:
            return str(execution["executionArn"])
    return None
