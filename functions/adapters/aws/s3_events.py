"""S3 events as SQS delivers them, in both shapes AWS sends: decoded keys, and what intake should ignore.

- An S3 event notification (`{"Records": [...]}`, eventVersion 2.x): S3 URL-encodes object keys the way HTML forms
  do (`a b` -> `a+b`, `+` -> `%2B`), so `unquote_plus` is the one correct decoding. Records are read leniently (the
  fields intake needs), not with Powertools' strict `S3Model`: moto's records lack fields it requires.
- An EventBridge event routed to the queue (`{"source": "aws.s3", "detail-type": "Object Created", ...}`): parsed
  with Powertools' `S3EventNotificationEventBridgeModel`; its keys are NOT URL-encoded.

Both give the same `IntakeObject` (decoded key, version id, ETag), so the same object version announced both ways
gets the same ledger key and execution name. `s3:TestEvent`, EventBridge S3 events other than "Object Created",
folder markers and zero-byte objects are acknowledged and dropped; anything else is a malformed message (it fails,
and after the queue's maxReceiveCount it lands in the DLQ).
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from pydantic import ValidationError

from schemas.product import SIDECAR_NAME

EVENTBRIDGE_S3_SOURCE = "aws.s3"
EVENTBRIDGE_OBJECT_CREATED = "Object Created"


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
    if "detail-type" in document:
        yield from _objects_in_eventbridge_event(document)
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


def _objects_in_eventbridge_event(document: dict[str, Any]) -> Iterator[IntakeObject]:
    """The object an EventBridge "Object Created" event announces (none for S3's other EventBridge events)."""
    if document.get("source") != EVENTBRIDGE_S3_SOURCE:
        raise MalformedEventError(f"an EventBridge event from {document.get('source')!r}, not from Amazon S3")
    if document.get("detail-type") != EVENTBRIDGE_OBJECT_CREATED:
        return  # Object Deleted, Object Restore Completed, ...: nothing to ingest
    # Imported here: Powertools' parser models cost ~20 ms of ingest's cold start, and most intake is S3 notifications.
    from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel

    try:
        event = S3EventNotificationEventBridgeModel.model_validate(document)
    except ValidationError as error:
        raise MalformedEventError(f"an S3 EventBridge event that does not parse: {error}") from error
    obj = event.detail.object
    yield IntakeObject(
        bucket=event.detail.bucket.name,
        key=obj.key,  # EventBridge does not URL-encode keys
        version_id=obj.version_id or None,
        etag=obj.etag or None,
        size=int(obj.size or 0),
    )
