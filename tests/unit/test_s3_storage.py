"""S3Storage tells a missing object from a refusal even where S3 answers 403 for both (no bucket-wide ListBucket)."""

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from functions.adapters.aws.s3_storage import S3Storage


@pytest.fixture
def stubbed() -> tuple[S3Storage, Stubber]:
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return S3Storage(s3), Stubber(s3)


def test_a_403_for_a_key_the_prefix_listing_does_not_show_is_a_missing_object(stubbed):
    # Given a role that may list only its prefix: S3 answers a GET of a missing key with 403
    storage, stub = stubbed
    stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    stub.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "brands/acme/profile.json.bak"}], "KeyCount": 1},
        {"Bucket": "brands-bucket", "Prefix": "brands/acme/profile.json", "MaxKeys": 1},
    )
    # When the optional profile is read
    with stub, pytest.raises(FileNotFoundError):
        storage.read_bytes("s3://brands-bucket/brands/acme/profile.json")
    # Then it is reported missing (packshot defaults follow), not as a refusal


def test_a_403_for_a_key_that_exists_stays_a_refusal(stubbed):
    # Given an object that exists but that the role may not read
    storage, stub = stubbed
    stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    stub.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "brands/acme/profile.json"}], "KeyCount": 1},
        {"Bucket": "brands-bucket", "Prefix": "brands/acme/profile.json", "MaxKeys": 1},
    )
    # When it is read, Then the refusal surfaces: a wrong grant is never silently taken for "no profile"
    with stub, pytest.raises(ClientError):
        storage.read_bytes("s3://brands-bucket/brands/acme/profile.json")
