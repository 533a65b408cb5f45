"""The publisher port on the output bucket: `IfNoneMatch="*"` puts, so a published object is never replaced.

Approved images go to `<approved prefix><brand>/<name>` with their provenance as user metadata; feedback is one
JSON Lines object per review (`<feedback prefix><brand>/<review id>.jsonl`): S3 cannot append.
"""

import hashlib
from collections.abc import Mapping
from typing import Any

from functions.ports import PublishStatus
from functions.stages.publish import safe_name


class S3Publisher:
    def __init__(self, s3: Any, bucket: str, approved_prefix: str, feedback_prefix: str) -> None:
        self.s3, self.bucket = s3, bucket
        self.approved_prefix, self.feedback_prefix = approved_prefix, feedback_prefix

    def _put_once(
        self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> tuple[PublishStatus, str]:
        location = f"s3://{self.bucket}/{key}"
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=dict(metadata),
                IfNoneMatch="*",
            )
            return PublishStatus.PUBLISHED, location
        except self.s3.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
                raise
        existing = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        same = hashlib.sha256(existing).digest() == hashlib.sha256(body).digest()
        return (PublishStatus.ALREADY_PUBLISHED if same else PublishStatus.CONFLICT), location

    def publish(
        self, brand: str, name: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> tuple[PublishStatus, str]:
        return self._put_once(f"{self.approved_prefix}{safe_name(brand)}/{name}", data, content_type, metadata)

    def record_feedback(self, brand: str, review_id: str, lines: bytes) -> tuple[PublishStatus, str]:
        key = f"{self.feedback_prefix}{safe_name(brand)}/{safe_name(review_id)}.jsonl"
        return self._put_once(key, lines, "application/x-ndjson", {})
