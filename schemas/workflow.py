"""The payloads passed between the workflow's states, the same on both runtimes.

On AWS they travel as Step Functions state (ingest -> prepare -> GPU jobs -> checks -> review -> publish); locally the
runner passes the same models from stage to stage. Every handler parses its input with one of these at its boundary,
and the workflow tests build their task results from them. The first, `ExecutionInput`, is in `schemas/execution.py`:
it refers to no other contract, so `ingest` imports it without the models below (and review's, jobs'). The GPU
job attempt, `GpuJobTask`, is in `schemas/jobs.py` beside the JobRequest it carries; the checks' `ReviewRequest`, which
the review task takes, is in `schemas/review.py`.
"""

from pydantic import Field, computed_field

from ._base import Contract, ReviewerAddress
from .checks import QualityFlag
from .jobs import JobRequest, JobResult, Uri
from .records import Cutout, IntakeInfo
from .review import ReviewOutcome, ReviewRequest


class PreparedFiles(Contract):
    """What prepare wrote, by URI: `file://` locally, `s3://` on AWS."""

    cutout: Uri
    mask: Uri
    packshot: Uri
    normalised: Uri | None = Field(default=None, description="Written when a job needs the upright sRGB photo.")
    original_preview: Uri | None = Field(default=None, description="What the reviewer sees as the original.")
    cutout_preview: Uri | None = None
    packshot_preview: Uri | None = Field(default=None, description="A small packshot preview for the email.")


class ResolvedBrand(Contract):
    """The brand a photo belongs to, and the profile its GPU jobs use (none: packshot-only defaults)."""

    brand: str
    profile_uri: Uri | None = None
    adapters: dict[str, str] = Field(default_factory=dict, description="Adapter name -> version, as profiled.")
    note: str | None = Field(default=None, description="Why no profile applies, when none does.")


class PreparedImage(Contract):
    """The CPU half's result for one photo: the derived files, the checks, and the GPU jobs to run."""

    image_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{8,96}$")
    brand: ResolvedBrand
    sku: str
    source: str = Field(description="The original: its path relative to the input folder, or its s3:// URI.")
    filename: str
    publish_stem: str = Field(description="`<sku>/<photo>`: published files are named after it.")
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    intake: IntakeInfo
    cutout: Cutout
    checks: tuple[QualityFlag, ...] = ()
    files: PreparedFiles
    reviewers: tuple[ReviewerAddress, ...] = ()
    jobs: tuple[JobRequest, ...] = ()


class ChecksInput(Contract):
    """The automatic checks' input: the prepared image and every GPU job's result."""

    prepared: PreparedImage
    gpu_results: tuple[JobResult, ...] = ()


class PublishInput(Contract):
    """The publish task's input: the review request and the decisions it was resumed with."""

    review: ReviewRequest
    outcome: ReviewOutcome


class PublishResult(Contract):
    """Where the approved images went and what became feedback. A re-run adds nothing."""

    published: tuple[str, ...] = ()
    already_published: tuple[str, ...] = Field(default=(), description="The same bytes were there: a re-run.")
    conflicts: tuple[str, ...] = Field(default=(), description="Other bytes were there: left alone, reported.")
    rejected: tuple[str, ...] = Field(default=(), description="Item ids recorded as feedback.")
    feedback: str | None = Field(default=None, description="Where the feedback lines went.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def published_count(self) -> int:
        """The workflow's last Choice reads it: anything approved ends in `Published`."""
        return len(self.published) + len(self.already_published)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rejected_count(self) -> int:
        return len(self.rejected)
