"""Brand LoRA training on a SageMaker training job, started with the SageMaker Python SDK (2.x `Estimator`).

The job runs the same `gpu_jobs` image as the endpoint (its `train` command). Where things live in the brand store:

    <brands>/<brand>/datasets/<dataset sha256>/   the dataset folder, uploaded once: the `train` input channel
    <brands>/<brand>/training/<run key>/output/   the job's model.tar.gz (SageMaker's output path)
    <brands>/<brand>/training/<run key>/checkpoints/   spot checkpoints: an interrupted job resumes from them

The job name derives from the run key, so re-running the same command attaches to the running job, or starts a
follow-up job (`-r2`, ...) on the same checkpoints when the previous one stopped or failed. On `Completed`, the
model.tar.gz is unpacked and registered as `name@vN` (functions/stages/training_runs.py).
"""

import io
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from functions.adapters.aws.s3_storage import S3Storage, s3_location
from functions.stages.brand_versions import BrandStoreError
from functions.stages.training_runs import register_run
from schemas.brand_versions import BrandVersion
from schemas.training import TrainingConfig, training_config_to_hyperparameters

TERMINAL = ("Completed", "Failed", "Stopped")
_JOB_NAME = re.compile(r"[^a-zA-Z0-9\-]")


@dataclass(frozen=True)
class TrainingJobSettings:
    """What the stack provides (role, image) and what the user chooses (instance, spot, time limits)."""

    role_arn: str
    image_uri: str
    instance_type: str = "ml.g5.2xlarge"
    instance_count: int = 1
    spot: bool = False
    max_run_s: int = 4 * 3600
    max_wait_s: int | None = None  # spot only: the run time plus the time to wait for capacity; default 2x max_run
    volume_size_gb: int = 50
    region: str | None = None


@dataclass(frozen=True)
class TrainingJobStatus:
    name: str
    status: str  # InProgress | Completed | Failed | Stopping | Stopped
    secondary: str
    message: str
    elapsed_s: int
    model_uri: str | None


def job_name(brand: str, name: str, key: str, attempt: int = 1) -> str:
    """A deterministic job name (at most 63 characters): a re-run finds its job."""
    suffix = "" if attempt == 1 else f"-r{attempt}"
    stem = _JOB_NAME.sub("-", f"catalog-{brand}-{name}")[: 63 - 13 - len(suffix)].rstrip("-")
    return f"{stem}-{key[:12]}{suffix}"


def _training_uri(brands_uri: str, brand: str, key: str) -> str:
    return f"{brands_uri.rstrip('/')}/{brand}/training/{key}"


def dataset_uri(brands_uri: str, brand: str, dataset_sha256: str) -> str:
    return f"{brands_uri.rstrip('/')}/{brand}/datasets/{dataset_sha256}/"


def upload_dataset(storage: S3Storage, dataset_dir: Path, target_uri: str) -> int:
    """Upload the dataset folder once (create-only: an object already there is kept); returns files sent."""
    sent = 0
    for path in sorted(dataset_dir.rglob("*")):
        if path.is_file() and not path.name.endswith(".partial"):
            uri = f"{target_uri.rstrip('/')}/{path.relative_to(dataset_dir).as_posix()}"
            sent += int(storage.write_new(uri, path.read_bytes()))
    return sent


def describe(sagemaker_client: Any, name: str) -> TrainingJobStatus | None:
    """The job's status, or None when no job has that name."""
    try:
        job = sagemaker_client.describe_training_job(TrainingJobName=name)
    except sagemaker_client.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None
        raise
    return TrainingJobStatus(
        name=name,
        status=job["TrainingJobStatus"],
        secondary=job.get("SecondaryStatus", ""),
        message=job.get("FailureReason") or job.get("SecondaryStatusTransitions", [{}])[-1].get("StatusMessage", ""),
        elapsed_s=int(job.get("TrainingTimeInSeconds") or 0),
        model_uri=(job.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
    )


def start_or_attach(
    sagemaker_client: Any,
    boto_session: Any,
    config: TrainingConfig,
    settings: TrainingJobSettings,
    *,
    brands_uri: str,
    key: str,
    train_uri: str,
) -> TrainingJobStatus:
    """The run's job: a running or completed one is attached to; after a stopped or failed one, a follow-up starts
    on the same checkpoints (the container resumes from them); otherwise a new job starts."""
    attempt = 1
    while (found := describe(sagemaker_client, job_name(config.brand, config.name, key, attempt))) is not None:
        if found.status not in ("Failed", "Stopped"):
            return found
        attempt += 1
    name = job_name(config.brand, config.name, key, attempt)
    _estimator(boto_session, config, settings, brands_uri=brands_uri, key=key).fit(
        {"train": train_uri}, wait=False, job_name=name
    )
    started = describe(sagemaker_client, name)
    if started is None:
        raise BrandStoreError(f"SageMaker did not create training job {name}")
    return started


def _estimator(
    boto_session: Any, config: TrainingConfig, settings: TrainingJobSettings, *, brands_uri: str, key: str
) -> Any:
    """SDK 2.x `Estimator`: imported here, so the CLI and Lambdas that never train do not pay for the SDK."""
    import sagemaker
    from sagemaker.estimator import Estimator

    training = _training_uri(brands_uri, config.brand, key)
    bucket, _ = s3_location(training)
    session = sagemaker.Session(boto_session=boto_session, default_bucket=bucket)
    return Estimator(
        image_uri=settings.image_uri,
        role=settings.role_arn,
        instance_count=settings.instance_count,
        instance_type=settings.instance_type,
        volume_size=settings.volume_size_gb,
        max_run=settings.max_run_s,
        output_path=f"{training}/output/",
        # Always set: on-demand jobs keep checkpoints too, so a follow-up job resumes after a failure.
        checkpoint_s3_uri=f"{training}/checkpoints/",
        hyperparameters=dict[str, Any](training_config_to_hyperparameters(config)),
        sagemaker_session=session,
        tags=[{"Key": "catalog:brand", "Value": config.brand}, {"Key": "catalog:run", "Value": key}],
        use_spot_instances=settings.spot,
        # Spot only: the run time plus the time to wait for capacity.
        max_wait=(settings.max_wait_s or 2 * settings.max_run_s) if settings.spot else None,
    )


def wait_for(
    sagemaker_client: Any,
    name: str,
    *,
    on_status: Callable[[TrainingJobStatus], None] = lambda status: None,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> TrainingJobStatus:
    """Poll `describe_training_job` until the job ends, reporting each status."""
    while True:
        status = describe(sagemaker_client, name)
        if status is None:
            raise BrandStoreError(f"training job {name} disappeared")
        on_status(status)
        if status.status in TERMINAL:
            return status
        sleep(poll_s)


def register_completed(
    storage: S3Storage,
    brands_uri: str,
    config: TrainingConfig,
    status: TrainingJobStatus,
    manifest_bytes: bytes,
    *,
    key: str,
) -> BrandVersion:
    """Unpack the completed job's model.tar.gz and register it as the brand's next version."""
    if status.status != "Completed" or not status.model_uri:
        raise BrandStoreError(
            f"training job {status.name} ended {status.status}: {status.message or 'no reason given'}"
        )
    try:
        archive = storage.read_bytes(status.model_uri)
    except FileNotFoundError as error:
        raise BrandStoreError(
            f"training job {status.name} completed, but its model is missing: {status.model_uri}"
        ) from error
    with tempfile.TemporaryDirectory(prefix="catalog-model-") as folder:
        output = Path(folder)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if member.isfile() and parts and parts[0] != "checkpoints":
                    tar.extract(member, output, filter="data")  # "data": no absolute paths, links or `..`
        return register_run(
            storage, brands_uri, config, output, manifest_bytes, key=key, source=f"sagemaker:{status.name}"
        )
