"""`ingest` against moto: exactly one execution per object version, poison messages fail alone, keys round-trip."""

import json
from urllib.parse import quote_plus

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from functions.adapters.aws.clients import client
from functions.handlers import ingest

from .aws_fixtures import INTAKE, REGION, FakeContext, create_resources, s3_message, sqs_event


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    with mock_aws():
        client.cache_clear()
        yield create_resources(monkeypatch)
        client.cache_clear()


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
    payload = json.loads(started["input"])
    assert payload["key"] == key
    assert (payload["brand"], payload["sku"], payload["filename"]) == ("marque-é", sku, filename)


# The exact shapes AWS documents for each route, with our bucket and a key that needs encoding.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html (eventVersion 2.1)
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html ("Object Created", delivered as the SQS body)
AWS_KEY = "incoming/acme/SKU 1+2/front shot.jpg"
AWS_VERSION = "096fKKXTRTtl3on89fVO.nfljtsv6qko"
AWS_ETAG = "d41d8cd98f00b204e9800998ecf8427e"


def notification_v21(key_in_event: str = quote_plus(AWS_KEY, safe="/")) -> str:
    """An S3 event notification (eventVersion 2.1) as SQS delivers it: the key is URL-encoded."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": REGION,
                    "eventTime": "2026-11-30T12:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
                    "requestParameters": {"sourceIPAddress": "172.16.0.1"},
                    "responseElements": {
                        "x-amz-request-id": "C3D13FE58DE4C810",
                        "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
                    },
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "IntakeNotification",
                        "bucket": {
                            "name": INTAKE,
                            "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                            "arn": f"arn:aws:s3:::{INTAKE}",
                        },
                        "object": {
                            "key": key_in_event,
                            "size": 1024,
                            "eTag": AWS_ETAG,
                            "versionId": AWS_VERSION,
                            "sequencer": "0055AED6DCD90281E5",
                        },
                    },
                }
            ]
        }
    )


def eventbridge_object_created(key: str = AWS_KEY, detail_type: str = "Object Created") -> str:
    """An EventBridge "Object Created" event as an SQS target receives it (the event is the body); key not encoded."""
    return json.dumps(
        {
            "version": "0",
            "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": detail_type,
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-11-30T12:00:00Z",
            "region": REGION,
            "resources": [f"arn:aws:s3:::{INTAKE}"],
            "detail": {
                "version": "0",
                "bucket": {"name": INTAKE},
                "object": {
                    "key": key,
                    "size": 1024,
                    "etag": AWS_ETAG,
                    "version-id": AWS_VERSION,
                    "sequencer": "0055AED6DCD90281E5",
                },
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": "123456789012",
                "source-ip-address": "1.2.3.4",
                "reason": "PutObject",
            },
        }
    )


def started_inputs(machine: str) -> list[dict]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    return [json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in executions(machine)]


def test_an_eventbridge_object_created_event_starts_an_execution(machine):
    # Given an upload announced by EventBridge ("Object Created") through the same queue
    body = eventbridge_object_created()

    # When ingest sees it
    response = ingest.lambda_handler(sqs_event([body]), FakeContext())

    # Then it is not refused as malformed: one execution, with the key exactly as uploaded (EventBridge does not
    # URL-encode it), the version id and the ETag
    assert response["batchItemFailures"] == []
    (payload,) = started_inputs(machine)
    assert (payload["key"], payload["version_id"], payload["etag"], payload["size"]) == (
        AWS_KEY,
        AWS_VERSION,
        AWS_ETAG,
        1024,
    )
    assert (payload["brand"], payload["sku"], payload["filename"]) == ("acme", "SKU 1+2", "front shot.jpg")


def test_a_version_21_notification_with_every_documented_field_starts_an_execution(machine):
    # Given the eventVersion 2.1 record AWS documents (userIdentity, sequencer, ...), the key URL-encoded
    response = ingest.lambda_handler(sqs_event([notification_v21()]), FakeContext())

    # Then the execution has the decoded key
    assert response["batchItemFailures"] == []
    (payload,) = started_inputs(machine)
    assert (payload["key"], payload["version_id"]) == (AWS_KEY, AWS_VERSION)


def test_the_same_object_delivered_both_ways_starts_one_execution(machine):
    # Given one upload announced twice: as an S3 notification (key encoded) and through EventBridge (key not encoded)
    bodies = [notification_v21(), eventbridge_object_created()]

    # When ingest sees both, in one batch and again in later batches, in either order
    first = ingest.lambda_handler(sqs_event(bodies), FakeContext())
    second = ingest.lambda_handler(sqs_event(list(reversed(bodies))), FakeContext())

    # Then the ledger keys agree: one execution
    assert first["batchItemFailures"] == [] and second["batchItemFailures"] == []
    assert len(executions(machine)) == 1


@pytest.mark.parametrize("detail_type", ["Object Deleted", "Object Restore Completed", "Object Tags Added"])
def test_other_eventbridge_s3_events_are_dropped(machine, detail_type):
    response = ingest.lambda_handler(sqs_event([eventbridge_object_created(detail_type=detail_type)]), FakeContext())
    assert response["batchItemFailures"] == []
    assert executions(machine) == []


def test_an_eventbridge_event_of_another_source_or_without_an_object_is_malformed(machine):
    # Given EventBridge events that do not describe an S3 object
    other_source = json.loads(eventbridge_object_created())
    other_source["source"] = "aws.ec2"
    no_object = json.loads(eventbridge_object_created())
    del no_object["detail"]["object"]

    # When ingest sees them in a batch with a good event
    bodies = [json.dumps(other_source), json.dumps(no_object), eventbridge_object_created()]
    response = ingest.lambda_handler(sqs_event(bodies), FakeContext())

    # Then each fails on its own (and lands in the DLQ after the queue's maxReceiveCount); the good one starts
    assert response["batchItemFailures"] == [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]
    assert len(executions(machine)) == 1
