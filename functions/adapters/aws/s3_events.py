"""S3 event notifications as SQS delivers them: decoded keys, and what intake should ignore.

S3 URL-encodes object keys in notifications the way HTML forms do (`a b` -> `a+b`, `+` -> `%2B`), so
`unquote_plus` is the one correct decoding. `s3:TestEvent`, folder markers and zero-byte objects are acknowledged
and dropped; anything that is not an S3 notification at all is a malformed message (it fails, and after the
queue's maxReceiveCount it lands in the DLQ).
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from schemas.product import SIDECAR_NAME


class MalformedEventError(ValueError):
    """The message is not an S3 notification we understand: reported as a batch item failure."""


@dataclass(frozen=True)
class IntakeObject:
    """One object version that arrived in the intake bucket. `key` is decoded."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int

    @property
    def version(self) -> str:
        """What tells two uploads to the same key apart: the version id (versioned bucket), else the ETag."""
        return self.version_id or self.etag or "unversioned"

    @property
    def ledger_key(self) -> str:
        return f"s3://{self.bucket}/{self.key}#{self.version}"

    @property
    def image_id(self) -> str:
        """Stable id for this object version (derived keys, job ids and the execution name are built on it)."""
        return hashlib.sha256(f"{self.bucket}\n{self.key}\n{self.version}".encode()).hexdigest()[:32]

    @property
    def execution_name(self) -> str:
        # 80 characters at most, [A-Za-z0-9-_]; the same object version always gets the same name.
        return f"img-{self.image_id}"


@dataclass(frozen=True)
class ProductLocation:
    """`<intake prefix><brand>/<sku>/.../<file name>`."""

    brand: str
    sku: str
    filename: str


def product_location(key: str, intake_prefix: str) -> ProductLocation | None:
    """Brand, SKU and file name from an intake key, or None when the key is not laid out that way."""
    if not key.startswith(intake_prefix):
        return None
    parts = key[len(intake_prefix) :].split("/")
    if len(parts) < 3 or not all(parts):
        return None
    return ProductLocation(brand=parts[0], sku=parts[1], filename=parts[-1])


def skip_reason(obj: IntakeObject, intake_prefix: str) -> str | None:
    """Why intake acknowledges and drops this object, or None when it should be processed."""
    if obj.key.endswith("/"):
        return "folder marker"
    if obj.size == 0:
        return "zero-byte object"
    location = product_location(obj.key, intake_prefix)
    if location is None:
        return f"not under {intake_prefix}<brand>/<sku>/"
    if location.filename == SIDECAR_NAME or location.filename.startswith("."):
        return "sidecar or hidden file, not a photo"
    return None


def objects_in_message(body: str) -> Iterator[IntakeObject]:
    """The created objects one SQS message body announces (none for `s3:TestEvent`)."""
    try:
        document: Any = json.loads(body)
    except (json.JSONDecodeError, TypeError) as error:
        raise MalformedEventError(f"the message body is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise MalformedEventError("the message body is not a JSON object")
    if document.get("Event") == "s3:TestEvent":
        return
    records = document.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("the message is neither an S3 notification nor an s3:TestEvent")
    for record in records:
        try:
            if not str(record["eventName"]).startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            obj = s3["object"]
            yield IntakeObject(
                bucket=str(s3["bucket"]["name"]),
                key=unquote_plus(str(obj["key"])),
                version_id=obj.get("versionId") or None,
                etag=obj.get("eTag") or None,
                size=int(obj.get("size", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedEventError(f"an S3 record lacks {error}") from error
