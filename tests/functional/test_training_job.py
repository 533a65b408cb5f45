"""`catalog train run --on sagemaker` against moto: the SDK creates a spot training job with checkpoints and a
maximum run time on the uploaded dataset; once the job has completed, its model.tar.gz becomes `ss27@v1` in the S3
brand store. moto runs nothing, so the test puts the job's model.tar.gz where SageMaker would."""

import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID as ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends
from typer.testing import CliRunner

from functions.adapters.aws.s3_storage import S3Storage
from functions.adapters.aws.training_jobs import job_name
from functions.local.cli import app
from functions.stages.brand_versions import list_versions
from schemas.training import TrainingConfig, TrainingReport, training_config_from_hyperparameters
from tests.tiny_dataset import write_dataset

REGION = "us-east-1"
BUCKET = "catalog-brands"
BRANDS = f"s3://{BUCKET}/brands/"
ROLE = "arn:aws:iam::123456789012:role/catalog-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/catalog-gpu-jobs:latest"
SAGEMAKER = [
    "--on", "sagemaker", "--brands", BRANDS, "--role-arn", ROLE, "--image-uri", IMAGE,
    "--instance-type", "ml.g5.2xlarge", "--spot", "--max-run", "3600", "--steps", "500", "--region", REGION,
    "--poll-seconds", "0",
]  # fmt: skip


@pytest.fixture
def aws(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield


def _train(dataset: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["train", "run", str(dataset), "--brand", "acme", "--name", "ss27", *SAGEMAKER, *extra]
    )
    return result.exit_code, " ".join(result.output.split())


def _model_tar(config: TrainingConfig) -> bytes:
    """What the container's `train` leaves in /opt/ml/model, as SageMaker packs it."""
    now = datetime.now(UTC)
    report = TrainingReport(
        brand="acme", name="ss27", dataset_sha256="0" * 64, num_images=2, base_model="sdxl",
        base_model_source="stabilityai/stable-diffusion-xl-base-1.0", base_model_licence="openrail++",
        base_model_commercial_use=True, config=config, steps_done=500, wall_time_s=1.0, device="NVIDIA A10G",
        dtype="float32", torch_version="2.7.1", diffusers_version="0.42", peft_version="0.17", started_at=now,
        finished_at=now, validation_images=("validation/step-500/grid.png",),
    )  # fmt: skip
    files = {
        "pytorch_lora_weights.safetensors": b"lora bytes",
        "pytorch_lora_weights_kohya.safetensors": b"kohya bytes",
        "training.json": report.model_dump_json().encode(),
        "validation/step-500/grid.png": b"png bytes",
        "checkpoints/checkpoint-500/state.bin": b"not for the version",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_spot_training_job_is_started_and_its_model_becomes_the_next_version(aws, tmp_path):
    dataset = write_dataset(tmp_path / "ds")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)

    # When the run starts on SageMaker and detaches
    code, output = _train(dataset, "--detach")
    assert code == 0, output

    # Then one job was created from the stack's image and role, spot, with checkpoints and a maximum run time
    [summary] = sagemaker.list_training_jobs()["TrainingJobSummaries"]
    job = sagemaker.describe_training_job(TrainingJobName=summary["TrainingJobName"])
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE and job["RoleArn"] == ROLE
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    checkpoints = job["CheckpointConfig"]["S3Uri"]
    assert checkpoints.startswith(f"{BRANDS}acme/training/") and checkpoints.endswith("/checkpoints/")
    # And its `train` channel is the uploaded dataset, and its hyperparameters are the training config
    [channel] = job["InputDataConfig"]
    train_uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert channel["ChannelName"] == "train" and train_uri.startswith(f"{BRANDS}acme/datasets/")
    prefix = train_uri.removeprefix(f"s3://{BUCKET}/")
    uploaded = {
        item["Key"].removeprefix(prefix) for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    }
    assert {"dataset.json", "images/p0.png", "images/p0.txt"} <= uploaded
    config = training_config_from_hyperparameters(job["HyperParameters"])
    assert (config.brand, config.name, config.max_train_steps, config.trigger_token) == (
        "acme",
        "ss27",
        500,
        "acmestyle",
    )
    # And nothing is registered yet
    assert list_versions(S3Storage(s3), BRANDS, "acme") == []

    # When SageMaker has written the model (moto marked the job Completed) and the same command runs again
    model_key = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix(f"s3://{BUCKET}/")
    s3.put_object(Bucket=BUCKET, Key=model_key, Body=_model_tar(config))
    code, output = _train(dataset)

    # Then it attached to the same job (no second one) and registered its model as ss27@v1, without checkpoints
    assert code == 0 and "registered ss27@v1" in output, output
    assert len(sagemaker.list_training_jobs()["TrainingJobSummaries"]) == 1
    [version] = list_versions(S3Storage(s3), BRANDS, "acme")
    assert version.source == f"sagemaker:{summary['TrainingJobName']}"
    assert set(version.files) == {
        "pytorch_lora_weights.safetensors", "pytorch_lora_weights_kohya.safetensors", "training.json",
        "validation/step-500/grid.png", "dataset.json",
    }  # fmt: skip
    body = s3.get_object(Bucket=BUCKET, Key="brands/acme/versions/ss27@v1/pytorch_lora_weights.safetensors")["Body"]
    assert body.read() == b"lora bytes"

    # And a third run says it is already registered
    code, output = _train(dataset)
    assert code == 0 and "already registered as ss27@v1" in output


def test_a_stopped_job_is_followed_by_one_that_resumes_from_the_same_checkpoints(aws, tmp_path):
    # Given the run's first job was stopped (spot capacity never came back, or someone stopped it)
    dataset = write_dataset(tmp_path / "ds")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    code, output = _train(dataset, "--detach")
    assert code == 0, output
    [first] = sagemaker.list_training_jobs()["TrainingJobSummaries"]
    # moto has no StopTrainingJob: set the state SageMaker would report in moto's backend
    backend = sagemaker_backends[ACCOUNT_ID][REGION]
    backend.training_jobs[first["TrainingJobName"]].training_job_status = "Stopped"
    stopped = sagemaker.describe_training_job(TrainingJobName=first["TrainingJobName"])

    # When the same command runs again
    code, output = _train(dataset, "--detach")

    # Then a follow-up job starts with the same checkpoint location, named after the first
    assert code == 0, output
    second = sagemaker.describe_training_job(TrainingJobName=f"{first['TrainingJobName']}-r2")
    assert second["CheckpointConfig"] == stopped["CheckpointConfig"]


def test_without_the_stack_outputs_it_says_which_ones_to_pass(aws, tmp_path):
    dataset = write_dataset(tmp_path / "ds")
    result = CliRunner().invoke(
        app,
        ["train", "run", str(dataset), "--brand", "acme", "--name", "ss27", "--on", "sagemaker", "--brands", BRANDS],
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "TrainingRoleArn" in output and "TrainingImageUri" in output
    assert boto3.client("sagemaker", region_name=REGION).list_training_jobs()["TrainingJobSummaries"] == []


def test_job_names_fit_sagemaker_and_differ_per_run():
    # Given long brand and adapter names, When job names are made, Then they fit SageMaker's 63 characters
    names = {job_name("a" * 64, "b_" * 30, key, attempt) for key in ("k" * 24, "j" * 24) for attempt in (1, 2)}
    assert len(names) == 4 and all(len(name) <= 63 and "_" not in name for name in names)
