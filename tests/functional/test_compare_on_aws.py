"""`catalog compare --endpoint` on AWS (moto): our recipes run on the deployed SageMaker async endpoint, the versions
come from the S3 brand store, the cells' images are read back from S3, and an endpoint failure is a recorded cell.

moto's async endpoint runs no container: it answers from a queue of results, so each answer here is what the GPU
container's /invocations returns (a JobResult), with the files it names written to S3 the way the recipe writes them.
"""

import io
import json

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image
from typer.testing import CliRunner

from functions.adapters.aws.s3_storage import S3Storage
from functions.local.cli import app
from functions.stages.brand_versions import register_version
from schemas import JobKind, JobOutput, JobResult, Status
from tests.functional.test_compare_engines import write_cutout

REGION, ACCOUNT = "us-east-1", "123456789012"
ENDPOINT = "catalog-gpu-jobs"
SIZE = 64


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", REGION),
    ):
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("brands", "work"):
            s3.create_bucket(Bucket=bucket)
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model(
            ModelName="gpu-jobs",
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/gpu",
            PrimaryContainer={"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gpu-jobs:latest"},
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName="gpu-jobs",
            ProductionVariants=[
                {"VariantName": "main", "ModelName": "gpu-jobs", "InstanceType": "ml.g4dn.xlarge",
                 "InitialInstanceCount": 1}
            ],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://work/async-out/"}},
        )  # fmt: skip
        sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="gpu-jobs")
        yield s3


def endpoint_answers(s3, results: list[bool | str]) -> None:
    """Queue the endpoint's answers: for each True, a lifestyle result whose files are in S3; for False, a failure;
    for "altered", a result whose product pixels were repainted."""
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    queue = sagemakerruntime_backends[ACCOUNT][REGION].async_results_queue
    cutout = np.asarray(Image.open(write_cutout_to_memory()).convert("RGBA"))
    for index, ok in enumerate(results):
        if not ok:
            queue.append((True, json.dumps({"error": {"code": "internal_error", "message": "CUDA out of memory"}})))
            continue
        placed = np.zeros((SIZE, SIZE, 4), np.uint8)
        placed[8:56, 8:56] = cutout
        keep = placed[..., 3] >= 128
        image = np.random.default_rng(index).integers(40, 200, (SIZE, SIZE, 3)).astype(np.uint8)
        image[keep] = placed[..., :3][keep]
        if ok == "altered":
            image[keep] = np.clip(image[keep].astype(int) + np.array([0, 60, 60]), 0, 255).astype(np.uint8)
        prefix = f"s3://work/endpoint-wrote/{index}"
        files = {"lifestyle_0.png": Image.fromarray(image), "placed.png": Image.fromarray(placed, "RGBA"),
                 "keep_mask.png": Image.fromarray(np.where(keep, 255, 0).astype(np.uint8))}  # fmt: skip
        for name, picture in files.items():
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            s3.put_object(Bucket="work", Key=f"endpoint-wrote/{index}/{name}", Body=buffer.getvalue())
        result = JobResult(
            job_id=f"answer-{index:04d}",
            kind=JobKind.LIFESTYLE,
            status=Status.SUCCEEDED,
            outputs=(
                JobOutput(
                    uri=f"{prefix}/lifestyle_0.png",
                    seed=index,
                    details={"mode": "inpaint", "placed_uri": f"{prefix}/placed.png",
                             "keep_mask_uri": f"{prefix}/keep_mask.png"},
                ),
            ),
            model_version="sdxl-base:deployed",
        )  # fmt: skip
        queue.append((False, result.model_dump_json()))


def write_cutout_to_memory() -> io.BytesIO:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        return io.BytesIO(write_cutout(Path(folder) / "c.png").read_bytes())


def test_compare_runs_our_recipes_on_the_deployed_endpoint_and_records_its_failure(aws, tmp_path) -> None:
    s3 = aws
    # Given the deployed brand store with ss27@v1, the endpoint, and a product and prompt on this machine
    register_version(
        S3Storage(s3), "s3://brands/", "acme", "ss27", {"pytorch_lora_weights.safetensors": b"weights"},
        run_key="one", source="local",
    )  # fmt: skip
    products = tmp_path / "products"
    products.mkdir()
    write_cutout(products / "shirt-1.png")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"id": "terrace", "prompt": "a shirt on a terrace"}]))
    endpoint_answers(s3, [True, True, True, False])  # the 4th job fails on the GPU

    # When base and ss27@v1 are compared on the endpoint
    outcome = CliRunner().invoke(
        app,
        ["compare", "--brand", "acme", "--prompts", str(prompts), "--products", str(products),
         "--engines", "base,acme/ss27@v1", "--seeds", "2", "--size", str(SIZE), "--out", str(tmp_path / "cmp"),
         "--endpoint", ENDPOINT, "--work", "s3://work/compare/", "--brands", "s3://brands/"],
    )  # fmt: skip

    # Then every job went to the endpoint through S3: the cutout uploaded, outputs under the work prefix, the
    # version's adapter read from the brand store
    assert outcome.exit_code == 1, outcome.output
    listed = s3.list_objects_v2(Bucket="work", Prefix="compare/requests/")["Contents"]
    requests = [json.loads(s3.get_object(Bucket="work", Key=item["Key"])["Body"].read()) for item in listed]
    assert len(requests) == 4
    assert all(request["inputs"]["cutout"].startswith("s3://work/compare/inputs/shirt-1-") for request in requests)
    assert all(request["output_prefix"].startswith("s3://work/compare/outputs/") for request in requests)
    adapters = [
        [
            (ref["name"], ref["uri"], ref["version"], ref["embeddings_uri"])
            for ref in request["params"]["brand_profile"]["adapters"]
        ]
        for request in requests
        if "brand_profile" in request["params"]
    ]
    version_uri = "s3://brands/acme/versions/ss27@v1/pytorch_lora_weights.safetensors"
    assert adapters == [[("ss27", version_uri, "ss27@v1", None)]] * 2

    # And the images came back from S3 and were scored; the failed job is a recorded cell, not a crash
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["engines"]["base"]["images"] == 2
    assert summary["engines"]["base"]["metrics"]["product_pixels_preserved"]["min"] == 1.0
    assert summary["engines"]["acme/ss27@v1"]["images"] == 1
    assert summary["engines"]["acme/ss27@v1"]["failed"] == {"internal_error": 1}
    failed = json.loads((tmp_path / "cmp/cells/terrace/shirt-1/acme-ss27@v1/seed-1/cell.json").read_text())
    assert failed["message"] == "CUDA out of memory"


def test_the_promotion_gate_runs_on_the_endpoint_against_the_s3_brand_store(aws) -> None:
    from functions.local.promotion_gate import build_gate
    from functions.stages.brand_versions import BrandStoreError, latest_promotion, promote

    s3 = aws
    storage = S3Storage(s3)
    # Given the deployed brand store: ss27@v1 active, ss27@v2 registered, a validation set with one product
    for run in ("one", "two"):
        files = {"pytorch_lora_weights.safetensors": f"weights {run}".encode()}
        register_version(storage, "s3://brands/", "acme", "ss27", files, run_key=run, source="local")
    promote(storage, "s3://brands/", "acme", "ss27@v1", gate=None, force_reason=None, actor="test")
    validation = "prompts: [a shirt on a terrace]\nproducts: validation/products\nseeds: [0, 1]\nsize: 64\n"
    s3.put_object(Bucket="brands", Key="acme/validation.yaml", Body=validation.encode())
    s3.put_object(Bucket="brands", Key="acme/validation/products/shirt-1.png", Body=write_cutout_to_memory().read())
    # and an endpoint on which ss27@v2 repaints the product (the active version's two jobs come first)
    endpoint_answers(s3, [True, True, "altered", "altered"])

    # When ss27@v2 is promoted with the gate on the endpoint
    gate = build_gate(storage, "s3://brands/", "acme", endpoint=ENDPOINT, work="s3://work/gate/")
    with pytest.raises(BrandStoreError) as refused:
        promote(storage, "s3://brands/", "acme", "ss27@v2", gate=gate, force_reason=None, actor="test")

    # Then it is refused for the product's pixels, and the comparison is kept next to the candidate in the store
    message = str(refused.value)
    assert "product_pixels_preserved fell from 1 to 0" in message
    report_key = "acme/versions/ss27@v2/gate/against-ss27@v1/report.html"
    assert f"s3://brands/{report_key}" in message
    assert s3.head_object(Bucket="brands", Key=report_key)["ContentType"] == "text/html"
    summary = json.loads(
        s3.get_object(Bucket="brands", Key=report_key.replace("report.html", "summary.json"))["Body"].read()
    )
    assert list(summary["engines"]) == ["acme/ss27@v1", "acme/ss27@v2"]
    latest = latest_promotion(storage, "s3://brands/", "acme")
    assert latest is not None and latest.version == "ss27@v1"
