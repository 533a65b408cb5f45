"""The aws-sim backfill's two speed-ups of moto's DynamoDB keep DynamoDB's answers: a Query on the table's key reads
one partition (same items, order and pages), and a cancelled TransactWriteItems leaves every item as it was."""

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from functions.local.backfill_sim import item_level_transaction_rollback, partition_queries

REGION = "us-east-1"
TABLE = "reviews"


@pytest.fixture
def dynamodb():
    """A pk/sk table holding three reviews of four rows each, behind both speed-ups."""
    with mock_aws(), partition_queries(), item_level_transaction_rollback():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for review in ("r1", "r2", "r3"):
            for row in ("review", "item#b", "item#a", "item#c"):
                client.put_item(TableName=TABLE, Item={"pk": {"S": review}, "sk": {"S": row}, "n": {"N": "1"}})
        yield client


def rows(client, review: str, **kwargs) -> list[str]:
    page = client.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": review}},
        **kwargs,
    )
    return [item["sk"]["S"] for item in page["Items"]]


def test_a_query_on_the_key_returns_its_partition_in_order_and_in_pages(dynamodb):
    # When one review is queried, forwards, backwards, and two rows a page
    # Then only its rows come back, sorted by the range key, and paging goes on where it stopped
    assert rows(dynamodb, "r2") == ["item#a", "item#b", "item#c", "review"]
    assert rows(dynamodb, "r2", ScanIndexForward=False) == ["review", "item#c", "item#b", "item#a"]
    first = dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "r2"}},
        Limit=2,
    )
    assert [item["sk"]["S"] for item in first["Items"]] == ["item#a", "item#b"]
    assert rows(dynamodb, "r2", ExclusiveStartKey=first["LastEvaluatedKey"]) == ["item#c", "review"]
    # And a key nobody wrote has no rows
    assert rows(dynamodb, "r9") == []


def test_a_cancelled_transaction_leaves_every_item_as_it_was(dynamodb):
    # Given a transaction that adds a row, updates one, deletes one, and fails its last condition
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "r1"}, "sk": {"S": "item#d"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "r1"}, "sk": {"S": "item#a"}},
                        "UpdateExpression": "SET n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "r1"}, "sk": {"S": "item#b"}}}},
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": {"pk": {"S": "r3"}, "sk": {"S": "review"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    # Then it was cancelled, naming the failed condition
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    # And nothing it wrote before that stayed: no new row, the update undone, the deleted row back
    assert rows(dynamodb, "r1") == ["item#a", "item#b", "item#c", "review"]
    item_a = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "r1"}, "sk": {"S": "item#a"}})["Item"]
    assert item_a["n"] == {"N": "1"}
    # And the table goes on taking writes
    dynamodb.transact_write_items(
        TransactItems=[{"Put": {"TableName": TABLE, "Item": {"pk": {"S": "r1"}, "sk": {"S": "item#d"}}}}]
    )
    assert rows(dynamodb, "r1") == ["item#a", "item#b", "item#c", "item#d", "review"]
