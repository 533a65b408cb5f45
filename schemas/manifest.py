"""`OUT/manifest.json`: one entry per input file of a `catalog run`."""

from datetime import datetime

from pydantic import Field

from ._base import Contract
from .checks import QualityFlag
from .jobs import JobResult
from .product import JobKind
from .records import Cutout as CutoutInfo
from .records import IntakeInfo, ProcessingError, Status
from .review import ReviewItem
from .workflow import PreparedImage

MANIFEST_VERSION = 1


class ManifestEntry(Contract):
    source: str = Field(description="Input path relative to the input folder, with forward slashes.")
    sku: str
    status: Status
    error: ProcessingError | None = None
    content_sha256: str | None = Field(default=None, description="Of the input bytes; null if unreadable.")
    settings_fingerprint: str = Field(description="Hash of the options that shape the outputs.")
    outputs: dict[str, str] = Field(default_factory=dict, description="Output kind -> path relative to OUT.")
    checks: tuple[QualityFlag, ...] = ()
    intake: IntakeInfo | None = None
    cutout: CutoutInfo | None = None
    reused: bool = Field(default=False, description="True when a previous run's outputs were kept.")
    requested_jobs: tuple[JobKind, ...] = (JobKind.PACKSHOT,)
    jobs: tuple[JobResult, ...] = Field(default=(), description="GPU job results, with output URIs and seeds.")
    prepared: PreparedImage | None = Field(default=None, description="What prepare made: the workflow's payload.")
    review_items: tuple[ReviewItem, ...] = Field(
        default=(), description="The packshot and each generated image, with the automatic checks' flags."
    )


class RunOptions(Contract):
    background: str
    preset: str
    size: int
    fill_ratio: float
    output_format: str
    quality: int
    jobs: tuple[JobKind, ...] = (JobKind.PACKSHOT,)
    models: str | None = Field(default=None, description="`tiny` or a model config path, when GPU jobs run.")
    brand: str = "default"


class RunManifest(Contract):
    manifest_version: int = MANIFEST_VERSION
    tool_version: str
    started_at: datetime
    finished_at: datetime
    input_root: str
    output_root: str | None = Field(default=None, description="Absolute output folder; job URIs point under it.")
    options: RunOptions
    entries: tuple[ManifestEntry, ...]

    @property
    def failed(self) -> tuple[ManifestEntry, ...]:
        return tuple(e for e in self.entries if e.status is Status.FAILED)
