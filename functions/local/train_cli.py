"""`catalog train`: curate a brand's dataset (`dataset check`) and train its LoRA (`run`).

    catalog train run DS --brand acme --name ss27 --models tiny --steps 20 [--brands DIR]
    catalog train run DS --brand acme --name ss27 --on sagemaker --brands s3://BUCKET/brands/ \\
        --role-arn ROLE --image-uri IMAGE --instance-type ml.g5.2xlarge --spot

A run is keyed by brand, name, dataset hash and settings. Locally it trains in `<brands>/<brand>/training/<key>/`
(checkpoints there too), so re-running the same command after a crash or `kill -9` resumes; on SageMaker the job
name comes from the key, so a re-run attaches to the job or resumes a stopped one from its checkpoints. Only a
finished run is registered, as the next `name@vN`.
"""

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from functions.local.brand_cli import brand_store
from functions.local.dataset_cli import dataset_app
from functions.stages.brand_versions import BrandStoreError, VersionStorage, version_for_run
from functions.stages.training_runs import dataset_hash, finished_report, read_dataset, register_run, run_key
from schemas.brand_versions import BrandVersion
from schemas.dataset import DatasetManifest
from schemas.training import MixedPrecision, TrainingConfig

if TYPE_CHECKING:
    from functions.adapters.aws.training_jobs import TrainingJobStatus

train_app = typer.Typer(help="Curate a brand's photos and train its LoRA.", no_args_is_help=True)
train_app.add_typer(dataset_app, name="dataset")
console = Console(stderr=True)


class Runtime(StrEnum):
    LOCAL = "local"
    SAGEMAKER = "sagemaker"


TINY_RESOLUTION, TINY_VALIDATION_STEPS = 128, 4


def _tiny_resolution(manifest: DatasetManifest) -> int | None:
    """Buckets larger than TINY_RESOLUTION² shrink to it; smaller ones (test datasets) train as they are."""
    largest = max((photo.bucket[0] * photo.bucket[1] for photo in manifest.kept if photo.bucket), default=0)
    return TINY_RESOLUTION if largest > TINY_RESOLUTION**2 else None


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


@train_app.command("run")
def run(
    dataset: Annotated[Path, typer.Argument(help="The dataset folder `catalog train dataset check` wrote.")],
    brand: Annotated[str, typer.Option("--brand", help="The brand, e.g. acme.")],
    name: Annotated[str, typer.Option("--name", help="The adapter's name; versions are <name>@vN.")],
    models: Annotated[
        str, typer.Option("--models", help="'tiny' (random tiny models, CPU) or a model-config JSON.")
    ] = "tiny",
    brands: Annotated[
        str | None,
        typer.Option(
            help="The brand store: a folder, or s3://bucket/prefix/ (default: $CATALOG_BRANDS_DIR or ./brands)."
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 1000,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    learning_rate: Annotated[float, typer.Option(help="UNet LoRA learning rate.")] = 1e-4,
    pivotal: Annotated[
        bool, typer.Option("--pivotal/--no-pivotal", help="Also learn the trigger token's embeddings.")
    ] = False,
    train_text_encoder: Annotated[
        bool, typer.Option("--train-text-encoder", help="LoRA on the text encoders too.")
    ] = False,
    masked_loss: Annotated[bool, typer.Option("--masked-loss", help="Weight the loss by the product masks.")] = False,
    mixed_precision: Annotated[str, typer.Option(help="no | bf16 | fp16.")] = "no",
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 250,
    validation_every: Annotated[
        int | None, typer.Option(help="Steps between validation grids (default: only at the end).")
    ] = None,
    validation_steps: Annotated[
        int | None,
        typer.Option(help="Denoising steps of each validation image (default 25; 4 with --models tiny)."),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            help="Rescale the buckets to about this² pixels (default: each photo's bucket; 128 with --models tiny)."
        ),
    ] = None,
    on: Annotated[Runtime, typer.Option("--on", help="Where to train: local | sagemaker.")] = (Runtime.LOCAL),
    instance_type: Annotated[str, typer.Option(help="SageMaker instance.")] = "ml.g5.2xlarge",
    spot: Annotated[bool, typer.Option("--spot", help="SageMaker managed spot training.")] = False,
    max_run: Annotated[int, typer.Option(help="SageMaker maximum run time in seconds.")] = 14400,
    role_arn: Annotated[
        str | None, typer.Option(help="The stack's TrainingRoleArn output (default: $CATALOG_TRAINING_ROLE_ARN).")
    ] = None,
    image_uri: Annotated[
        str | None, typer.Option(help="The stack's TrainingImageUri output (default: $CATALOG_TRAINING_IMAGE_URI).")
    ] = None,
    region: Annotated[str | None, typer.Option(help="AWS region (default: the AWS configuration's).")] = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach", help="SageMaker: start the job and return; re-run without it to register the version."
        ),
    ] = False,
    poll_seconds: Annotated[float, typer.Option(hidden=True)] = 30.0,
) -> None:
    """Train a brand LoRA on a checked dataset and register it as the next <name>@vN in the brand store."""
    # 1. check the inputs: the dataset, the settings, the store
    # Random tiny models only try the flow: full-size buckets and 25-step grids would take minutes per step on a CPU.
    tiny = models == "tiny"
    try:
        manifest = read_dataset(dataset)
        manifest_bytes = (dataset / "dataset.json").read_bytes()
        if manifest.brand != brand:
            raise BrandStoreError(f"{dataset / 'dataset.json'}: brand is {manifest.brand!r}, but --brand is {brand!r}")
        config = TrainingConfig(
            brand=brand,
            name=name.lower(),
            trigger_token=manifest.trigger_token,
            models=models,
            rank=rank,
            learning_rate=learning_rate,
            pivotal_tuning=pivotal,
            train_text_encoder=train_text_encoder,
            masked_loss=masked_loss,
            mixed_precision=_precision(mixed_precision),
            max_train_steps=steps,
            checkpoint_every=checkpoint_every,
            validation_every=validation_every,
            validation_inference_steps=validation_steps or (TINY_VALIDATION_STEPS if tiny else 25),
            resolution=resolution or (_tiny_resolution(manifest) if tiny else None),
        )
        if on is Runtime.SAGEMAKER and not (brands or os.environ.get("CATALOG_BRANDS_DIR") or "").startswith("s3://"):
            raise BrandStoreError("--on sagemaker needs --brands s3://BUCKET/brands/ (the stack's BrandStoreUri)")
        storage, brands_uri = brand_store(brands, create=on is Runtime.LOCAL)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise _fail(f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}") from error
    except BrandStoreError as error:
        raise _fail(str(error)) from error
    key = run_key(config, dataset_hash(dataset, manifest))

    # 2. the same run registered already: say so instead of training again
    done = version_for_run(storage, brands_uri, brand, config.name, key)
    if done is not None:
        console.print(f"{brand}: this training run is already registered as {done.ref}.", highlight=False)
        return

    # 3. train and register
    try:
        if on is Runtime.LOCAL:
            version = _train_locally(storage, brands_uri, config, dataset, manifest_bytes, key)
        else:
            settings = _sagemaker_settings(role_arn, image_uri, instance_type, spot, max_run, region)
            found = _train_on_sagemaker(
                storage, brands_uri, config, dataset, manifest_bytes, key, settings, detach, poll_seconds
            )
            if found is None:
                return
            version = found
    except BrandStoreError as error:
        raise _fail(str(error)) from error
    console.print(
        f"{brand}: registered {version.ref}. Promote it with `catalog brand promote {brand} {version.ref}`.",
        highlight=False,
    )


def _precision(value: str) -> MixedPrecision:
    if value not in ("no", "bf16", "fp16"):
        raise BrandStoreError(f"--mixed-precision {value!r}: expected no, bf16 or fp16")
    return value  # type: ignore[return-value]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _train_locally(
    storage: VersionStorage, brands_uri: str, config: TrainingConfig, dataset: Path, manifest_bytes: bytes, key: str
) -> BrandVersion:
    """Train in the run's work folder (resuming from its checkpoints) unless it finished, then register it."""
    from functions.adapters.local.files import path_of

    work = path_of(f"{brands_uri.rstrip('/')}/{config.brand}/training/{key}")
    output, checkpoints = work / "output", work / "checkpoints"
    if finished_report(output) is None:  # training.json is written last: a run without a valid one goes on
        from gpu_jobs.training.lora import train_lora  # torch: only when training

        console.print(f"training {config.brand} {config.name} in {work}", highlight=False)
        with _progress() as progress:
            task = progress.add_task(f"{config.name}", total=config.max_train_steps, note="")

            def report(step: int, total: int, loss: float) -> None:
                progress.update(task, completed=step, total=total, note=f"loss {loss:.4f}")

            try:
                train_lora(config, dataset, output, checkpoint_dir=checkpoints, progress=report)
            except (ValueError, OSError) as error:
                raise BrandStoreError(f"training stopped: {error} (re-run the same command to resume)") from error
    return register_run(storage, brands_uri, config, output, manifest_bytes, key=key, source="local")


def _sagemaker_settings(
    role_arn: str | None, image_uri: str | None, instance_type: str, spot: bool, max_run: int, region: str | None
) -> Any:
    from functions.adapters.aws.training_jobs import TrainingJobSettings

    role = role_arn or os.environ.get("CATALOG_TRAINING_ROLE_ARN")
    image = image_uri or os.environ.get("CATALOG_TRAINING_IMAGE_URI")
    if not role or not image:
        raise BrandStoreError(
            "--on sagemaker needs --role-arn and --image-uri: the stack's TrainingRoleArn and TrainingImageUri outputs"
        )
    if max_run < 60:
        raise BrandStoreError(f"--max-run {max_run}: at least 60 seconds")
    return TrainingJobSettings(
        role_arn=role, image_uri=image, instance_type=instance_type, spot=spot, max_run_s=max_run, region=region
    )


def _train_on_sagemaker(
    storage: VersionStorage,
    brands_uri: str,
    config: TrainingConfig,
    dataset: Path,
    manifest_bytes: bytes,
    key: str,
    settings: Any,
    detach: bool,
    poll_seconds: float,
) -> BrandVersion | None:
    """Upload the dataset, start (or attach to) the run's job, follow it, and register its model when it completes."""
    import boto3

    from functions.adapters.aws import training_jobs

    session = boto3.Session(region_name=settings.region)
    sagemaker_client = session.client("sagemaker")
    from functions.adapters.aws.s3_storage import S3Storage

    if not isinstance(storage, S3Storage):
        raise BrandStoreError("--on sagemaker needs an s3:// brand store")
    s3_storage = storage
    manifest = read_dataset(dataset)
    train_uri = training_jobs.dataset_uri(brands_uri, config.brand, dataset_hash(dataset, manifest))
    sent = training_jobs.upload_dataset(s3_storage, dataset, train_uri)
    console.print(f"dataset at {train_uri} ({sent} new files)", highlight=False)
    job = training_jobs.start_or_attach(
        sagemaker_client, session, config, settings, brands_uri=brands_uri, key=key, train_uri=train_uri
    )
    console.print(f"training job {job.name}: {job.status} ({job.secondary})", highlight=False)
    if detach:
        console.print("detached: run the same command without --detach to follow the job and register its version.")
        return None
    with _progress() as progress:
        task = progress.add_task(job.name, total=settings.max_run_s, note=job.secondary)

        def show(status: "TrainingJobStatus") -> None:
            progress.update(task, completed=min(status.elapsed_s, settings.max_run_s), note=status.secondary)

        final = training_jobs.wait_for(sagemaker_client, job.name, on_status=show, poll_s=poll_seconds)
    if final.status != "Completed":
        raise BrandStoreError(
            f"training job {final.name} ended {final.status}: {final.message or 'no reason given'}. "
            "Re-run the same command to start a follow-up job that resumes from the checkpoints."
        )
    return training_jobs.register_completed(s3_storage, brands_uri, config, final, manifest_bytes, key=key)
