"""`ingest` against moto: exactly one execution per object version, poison messages fail alone, keys round-trip."""

from urllib.parse import quote_plus

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from functions.handlers import ingest

from .aws_fixtures import REGION, FakeContext, create_resources, s3_message, sqs_event


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    with mock_aws():
        ingest.client.cache_clear()
        yield create_resources(monkeypatch)
        ingest.client.cache_clear()


def executions(machine: str) -> list[dict]:
    return boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)["executions"]


def test_same_object_delivered_five_times_starts_one_execution(machine):
    # Given one upload whose notification SQS delivers five times (in one batch and across batches)
    body = s3_message("incoming/acme/SKU-1/front.jpg")

    # When ingest sees every delivery
    first = ingest.lambda_handler(sqs_event([body, body, body]), FakeContext())
    second = ingest.lambda_handler(sqs_event([body, body]), FakeContext())

    # Then exactly one execution exists and no delivery is reported as failed
    assert first["batchItemFailures"] == [] and second["batchItemFailures"] == []
    assert len(executions(machine)) == 1


def test_a_new_version_of_the_same_key_is_its_own_execution(machine):
    ingest.lambda_handler(sqs_event([s3_message("incoming/acme/SKU-1/front.jpg", version="v1")]), FakeContext())
    ingest.lambda_handler(sqs_event([s3_message("incoming/acme/SKU-1/front.jpg", version="v2")]), FakeContext())
    assert len(executions(machine)) == 2


def test_one_poison_message_in_ten_fails_alone(machine):
    # Given nine good uploads and one message that is not an S3 notification
    bodies = [s3_message(f"incoming/acme/SKU-{i}/front.jpg") for i in range(9)]
    bodies.insert(4, "{not json")

    # When the batch is processed
    response = ingest.lambda_handler(sqs_event(bodies), FakeContext())

    # Then only the poison message is reported failed, and the nine others started
    assert response["batchItemFailures"] == [{"itemIdentifier": "m4"}]
    assert len(executions(machine)) == 9


def test_test_events_folder_markers_and_empty_objects_are_dropped(machine):
    bodies = [
        '{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"catalog-intake"}',
        s3_message("incoming/acme/SKU-1/", size=0),
        s3_message("incoming/acme/SKU-1/empty.jpg", size=0),
        s3_message("incoming/acme/SKU-1/product.json"),
        s3_message("prepared/acme/SKU-1/front.jpg"),
    ]
    response = ingest.lambda_handler(sqs_event(bodies), FakeContext())
    assert response["batchItemFailures"] == []
    assert executions(machine) == []


key_parts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1, max_size=20
).filter(lambda part: part.strip(" ") == part and part not in (".", "..") and not part.startswith("."))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sku=key_parts, filename=key_parts.map(lambda name: f"{name} +%.jpg"))
def test_keys_with_spaces_plus_percent_and_non_ascii_round_trip(machine, sku, filename):
    # Given a key as the merchandiser wrote it, URL-encoded as S3 puts it in the notification
    key = f"incoming/marque-é/{sku}/{filename}"
    body = s3_message(quote_plus(key, safe="/"), version=str(abs(hash(key))))

    # When ingest starts its execution
    before = {e["executionArn"] for e in executions(machine)}
    ingest.lambda_handler(sqs_event([body]), FakeContext())

    # Then the execution input carries the key exactly as uploaded, with brand and SKU taken from it
    new = [e for e in executions(machine) if e["executionArn"] not in before]
    assert len(new) == 1
    started = boto3.client("stepfunctions", region_name=REGION).describe_execution(executionArn=new[0]["executionArn"])
    import json

    payload = json.loads(started["input"])
    assert payload["key"] == key
    assert (payload["brand"], payload["sku"], payload["filename"]) == ("marque-é", sku, filename)
