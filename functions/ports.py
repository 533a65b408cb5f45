"""The small ports the stages take; each runtime plugs in its own adapters (functions/adapters/local|aws).

A stage never knows whether a URI is a file or an S3 object, whether a GPU job runs in this process or on the
SageMaker endpoint, or whether publishing writes a folder or a bucket.
"""

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol

from schemas import JobRequest, JobResult


class BlobStorage(Protocol):
    """Bytes by URI. A missing object raises FileNotFoundError; a URI outside what the adapter serves, ValueError."""

    def read_bytes(self, uri: str) -> bytes: ...

    def write_bytes(self, uri: str, data: bytes, content_type: str) -> None: ...


class GpuJobRunner(Protocol):
    """Runs GPU jobs to their results: the in-process worker locally (the endpoint's stand-in)."""

    def run(self, request: JobRequest) -> JobResult: ...


class PublishStatus(StrEnum):
    PUBLISHED = "published"
    ALREADY_PUBLISHED = "already_published"  # the same bytes were there: a re-run
    CONFLICT = "conflict"  # other bytes were there: left alone, reported


class Publisher(Protocol):
    """Where approved images and feedback go: `OUT/` locally, the output bucket on AWS. Never overwrites."""

    def publish(
        self, brand: str, name: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> tuple[PublishStatus, str]:
        """Put `data` at `<approved>/<brand?>/<name>` unless something is there; returns the status and location."""
        ...

    def record_feedback(self, brand: str, review_id: str, lines: bytes) -> tuple[PublishStatus, str]:
        """Add JSON Lines of rejected images to the brand's feedback dataset; returns the status and location."""
        ...
