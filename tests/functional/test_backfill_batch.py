"""`backfill_batch` against moto: objects already in the intake bucket start once, exactly as ingest starts them."""

import boto3
import pytest
from moto import mock_aws

from functions.adapters.aws import settings
from functions.handlers import backfill_batch, ingest

from .aws_fixtures import INTAKE, REGION, FakeContext, create_resources, s3_message, sqs_event

PHOTO = b"\xff\xd8\xff\xe0 not decoded here"


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    with mock_aws():
        backfill_batch.client.cache_clear()
        arn = create_resources(monkeypatch)
        boto3.client("s3", region_name=REGION).put_bucket_versioning(
            Bucket=INTAKE, VersioningConfiguration={"Status": "Enabled"}
        )
        yield arn
        backfill_batch.client.cache_clear()


def put(key: str, body: bytes = PHOTO) -> str:
    """An object already in the intake bucket; returns its version id."""
    return str(boto3.client("s3", region_name=REGION).put_object(Bucket=INTAKE, Key=key, Body=body)["VersionId"])


def listed(*keys: str) -> list[dict]:
    """Items as a Distributed Map's ItemReader lists them (ListObjectsV2 entries: no version id, quoted ETag)."""
    s3 = boto3.client("s3", region_name=REGION)
    return [
        {k: str(v) for k, v in entry.items()}
        for key in keys
        for entry in s3.list_objects_v2(Bucket=INTAKE, Prefix=key)["Contents"]
        if entry["Key"] == key
    ]


def batch(items: list[dict], brand: str = "acme") -> dict:
    return {"BatchInput": {"bucket": INTAKE, "brand": brand}, "Items": items}


def executions(machine: str) -> list[dict]:
    return boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)["executions"]


def test_existing_objects_start_once_and_a_rerun_starts_nothing_new(machine):
    # Given three photos that were in the bucket before intake existed
    keys = [f"incoming/acme/SKU-{i}/front.jpg" for i in range(3)]
    for key in keys:
        put(key)

    # When the backfill batch runs, and then runs again (a resumed or repeated backfill)
    first = backfill_batch.lambda_handler(batch(listed(*keys)), FakeContext())
    second = backfill_batch.lambda_handler(batch(listed(*keys)), FakeContext())

    # Then the first run started three executions and the second none: the ledger holds them
    assert (first["started"], first["skipped"], first["failed"]) == (3, 0, 0)
    assert (second["started"], second["skipped"]) == (0, 3)
    assert len(executions(machine)) == 3


def test_an_object_ingest_already_started_is_skipped(machine):
    # Given a photo whose S3 notification ingest handled (the notification carries its version id)
    key = "incoming/acme/SKU-1/front.jpg"
    version = put(key)
    ingest.lambda_handler(sqs_event([s3_message(key, size=len(PHOTO), version=version)]), FakeContext())

    # When a backfill lists the same object (a listing has no version id)
    result = backfill_batch.lambda_handler(batch(listed(key)), FakeContext())

    # Then the backfill finds the same ledger entry and starts nothing
    assert (result["started"], result["skipped"]) == (0, 1)
    assert len(executions(machine)) == 1


def test_other_brands_sidecars_and_vanished_objects_do_not_stop_the_batch(machine):
    # Given a photo, another brand's photo, a sidecar, and a listed object deleted since the listing
    good, other, sidecar, gone = (
        "incoming/acme/SKU-1/front.jpg",
        "incoming/other/SKU-2/front.jpg",
        "incoming/acme/SKU-1/product.json",
        "incoming/acme/SKU-3/front.jpg",
    )
    for key in (good, other, sidecar, gone):
        put(key)
    items = listed(good, other, sidecar, gone)
    s3 = boto3.client("s3", region_name=REGION)
    for version in s3.list_object_versions(Bucket=INTAKE, Prefix=gone)["Versions"]:
        s3.delete_object(Bucket=INTAKE, Key=gone, VersionId=version["VersionId"])

    # When the batch runs
    result = backfill_batch.lambda_handler(batch(items), FakeContext())

    # Then the photo started, the brand's sidecar and the other brand were dropped, the vanished object failed alone
    assert (result["listed"], result["started"], result["dropped"], result["failed"]) == (4, 1, 2, 1)
    assert [failure["key"] for failure in result["failures"]] == [gone]
    assert "HeadObject" in result["failures"][0]["reason"]
    assert len(executions(machine)) == 1


def test_the_child_waits_per_started_image_only(machine, monkeypatch):
    # Given a pace of 2.5 s per started image, and one photo already started
    monkeypatch.setenv("BACKFILL_SECONDS_PER_IMAGE", "2.5")
    settings.load.cache_clear()
    keys = [f"incoming/acme/SKU-{i}/front.jpg" for i in range(3)]
    for key in keys:
        put(key)
    backfill_batch.lambda_handler(batch(listed(keys[0])), FakeContext())

    # When the batch of all three runs
    result = backfill_batch.lambda_handler(batch(listed(*keys)), FakeContext())

    # Then it waits for the two it started (5 s), not for the one it skipped
    assert (result["started"], result["skipped"], result["wait_seconds"]) == (2, 1, 5)


def test_a_malformed_batch_fails_naming_the_field(machine):
    with pytest.raises(ValueError, match="Items"):
        backfill_batch.lambda_handler({"BatchInput": {"bucket": INTAKE, "brand": "acme"}}, FakeContext())
