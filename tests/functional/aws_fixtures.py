"""Shared moto set-up for the pipeline handlers: tables, buckets, a state machine, and the settings' environment."""

import json
from dataclasses import dataclass

import boto3

from functions.adapters.aws import settings

REGION = "us-east-1"
INTAKE = "catalog-intake"
WORK = "catalog-work"
LEDGER = "catalog-ledger"
JOBS = "catalog-jobs"
ENDPOINT = "catalog-gpu-jobs"
# The tables' sparse indexes, as cdk/catalog_infra (gpu_endpoint.py, review.py) declares them.
OPEN_JOBS_INDEX, OPEN_JOB_ATTRIBUTE = "open-jobs", "open_job"
SWEEP_INDEX, SWEEP_QUEUE, SWEEP_AT = "sweep", "sweep_queue", "sweep_at"


@dataclass
class FakeContext:
    function_name: str = "test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:test"
    aws_request_id: str = "req-1"
    remaining_ms: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def create_resources(monkeypatch) -> str:
    """Everything the ingest and GPU job handlers touch; returns the state machine ARN."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=LEDGER,
        KeySchema=[{"AttributeName": "object_version", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "object_version", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    create_jobs_table(dynamodb)
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (INTAKE, WORK):
        s3.create_bucket(Bucket=bucket)
    machine = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name="per-image",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )
    for name, value in {
        "LEDGER_TABLE_NAME": LEDGER,
        "STATE_MACHINE_ARN": machine["stateMachineArn"],
        "JOBS_TABLE_NAME": JOBS,
        "WORK_BUCKET": WORK,
        "ENDPOINT_NAME": ENDPOINT,
    }.items():
        monkeypatch.setenv(name, value)
    settings.load.cache_clear()
    return str(machine["stateMachineArn"])


def create_jobs_table(dynamodb) -> None:
    """The GPU job store as the stack declares it: key `job_id`, the sparse index of open jobs."""
    dynamodb.create_table(
        TableName=JOBS,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": OPEN_JOB_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": "submitted_at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": OPEN_JOBS_INDEX,
                "KeySchema": [
                    {"AttributeName": OPEN_JOB_ATTRIBUTE, "KeyType": "HASH"},
                    {"AttributeName": "submitted_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def create_review_table(dynamodb, name: str) -> None:
    """The review table as the stack declares it: keys `pk`/`sk`, the sparse index of scheduled work."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": SWEEP_QUEUE, "AttributeType": "S"},
            {"AttributeName": SWEEP_AT, "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": SWEEP_INDEX,
                "KeySchema": [
                    {"AttributeName": SWEEP_QUEUE, "KeyType": "HASH"},
                    {"AttributeName": SWEEP_AT, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def s3_message(key_in_event: str, size: int = 1234, version: str = "v1", bucket: str = INTAKE) -> str:
    """An S3 -> SQS notification body, key URL-encoded the way S3 encodes it."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": key_in_event, "size": size, "eTag": "abc", "versionId": version},
                    },
                }
            ]
        }
    )


def sqs_event(bodies: list[str]) -> dict:
    return {
        "Records": [
            {
                "messageId": f"m{index}",
                "receiptHandle": f"h{index}",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:intake",
                "awsRegion": REGION,
            }
            for index, body in enumerate(bodies)
        ]
    }
