"""The storage port on S3: `s3://bucket/key` URIs through one boto3 client."""

from typing import Any
from urllib.parse import urlparse


def s3_location(uri: str) -> tuple[str, str]:
    """Bucket and key of an `s3://bucket/key` URI (or an S3 https URL, as async inference reports them)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "https") or not parsed.netloc or not parsed.path.lstrip("/"):
        raise ValueError(f"expected an s3://bucket/key URI, got {uri!r}")
    if parsed.scheme == "https":  # https://<bucket>.s3.<region>.amazonaws.com/<key>
        return parsed.netloc.split(".s3", 1)[0], parsed.path.lstrip("/")
    return parsed.netloc, parsed.path.lstrip("/")


class S3Storage:
    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = s3_location(uri)
        try:
            data: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey as error:
            raise FileNotFoundError(f"no such object: {uri}") from error
        except self.s3.exceptions.ClientError as error:
            # Without a bucket-wide ListBucket, S3 answers 403 for a missing key. The roles may list their own
            # prefixes only, so ask the listing: a key it does not show is missing, anything else is a real refusal.
            if error.response.get("Error", {}).get("Code") != "AccessDenied" or self._listed(bucket, key):
                raise
            raise FileNotFoundError(f"no such object: {uri}") from error
        return data

    def _listed(self, bucket: str, key: str) -> bool:
        found = self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents") or []
        return any(item.get("Key") == key for item in found)

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        bucket, key = s3_location(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def write_new(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Put `uri` only if no object is there (`IfNoneMatch="*"`); False when one is."""
        bucket, key = s3_location(uri)
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*")
        except self.s3.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            return False
        return True

    def list_uris(self, prefix_uri: str) -> list[str]:
        """Every object under the prefix `prefix_uri` (a folder: a trailing `/` is implied), sorted, as URIs."""
        bucket, prefix = s3_location(prefix_uri)
        prefix = prefix.rstrip("/") + "/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(f"s3://{bucket}/{item['Key']}" for page in pages for item in page.get("Contents") or ())
