"""Human review: what a reviewer is asked to decide, and what they decided."""

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from ._base import Contract, ReviewerAddress
from .checks import QualityFlag


class Verdict(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class RejectionReason(StrEnum):
    WRONG_COLOUR = "wrong_colour"
    FABRIC_TEXTURE = "fabric_texture"
    BODY_PROPORTIONS = "body_proportions"
    ARTEFACTS = "artefacts"
    OFF_BRAND = "off_brand"
    PRODUCT_ALTERED = "product_altered"
    OTHER = "other"


class GenerationProvenance(Contract):
    """What made a generated image, for the feedback dataset; unknown parts stay null (e.g. packshots)."""

    engine: str | None = Field(default=None, description="e.g. `backdrop`, `rembg:u2net`, `lifestyle`.")
    model: str | None = None
    model_version: str | None = None
    adapter: str | None = None
    adapter_version: str | None = None
    seed: int | None = None
    prompt: str | None = Field(default=None, description="The prompt the GPU job used (lifestyle, try-on).")


class ReviewItemDetails(Contract):
    """Extra facts about one item that the page and the feedback dataset use (never shown to mail scanners)."""

    source: str | None = Field(default=None, description="The input photo, relative to the input folder or a URI.")
    content_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    generated_thumbnail: str | None = Field(default=None, description="A small preview of `generated`, for email.")
    publish_name: str | None = Field(
        default=None, description="Where it is published, under the brand's approved folder: `<sku>/<photo>.<kind>...`."
    )
    # The all-defaults value, made without building the model's validator at import (`defer_build`): the same
    # value as `GenerationProvenance()`, which would build it (~10 ms of every Lambda's cold start).
    provenance: GenerationProvenance = GenerationProvenance.model_construct()


class ReviewItem(Contract):
    """One generated image awaiting a decision, shown beside its original."""

    item_id: str = Field(min_length=1, max_length=128)
    sku: str
    original: str = Field(description="URI or path of the original photo.")
    generated: str
    job_kind: str
    flags: tuple[QualityFlag, ...] = ()
    details: ReviewItemDetails = ReviewItemDetails.model_construct()  # == ReviewItemDetails(), built lazily


class ReviewRequest(Contract):
    """What a person is asked to decide for one photo: its packshot and generated images, with their flags. Here,
    not beside the workflow's other payloads, so the review task loads no more than the review contracts."""

    brand: str = Field(min_length=1)
    reviewers: tuple[ReviewerAddress, ...] = Field(min_length=1)
    items: tuple[ReviewItem, ...] = Field(min_length=1)


class ReviewTask(Contract):
    """A batch sent to reviewers in one email. The resume handle never appears here."""

    review_id: str = Field(min_length=16, max_length=128)
    brand: str
    reviewers: tuple[ReviewerAddress, ...] = Field(min_length=1)
    items: tuple[ReviewItem, ...] = Field(min_length=1)
    created_at: datetime
    expires_at: datetime
    reissued_from: str | None = Field(default=None, description="The expired batch whose pending items this re-asks.")


class ReviewDecision(Contract):
    item_id: str
    verdict: Verdict
    reason: RejectionReason | None = None
    note: str | None = Field(default=None, max_length=2000)
    reviewer: str = Field(description="Who decided: the address the link was sent to, or SSO identity.")
    decided_at: datetime

    @model_validator(mode="after")
    def _rejection_needs_reason(self) -> "ReviewDecision":
        if self.verdict is Verdict.REJECTED and self.reason is None:
            raise ValueError("a rejection needs a reason")
        return self


class ReviewState(StrEnum):
    """Where a batch (or one item of it) stands. `decided` and `expired` are terminal."""

    PENDING = "pending"
    DECIDED = "decided"
    EXPIRED = "expired"


class ReviewOutcome(Contract):
    """What a batch ended with: sent to the workflow when it resumes, and what publishing reads."""

    review_id: str
    state: ReviewState
    decisions: tuple[ReviewDecision, ...] = ()
    pending_item_ids: tuple[str, ...] = ()


class FeedbackRecord(Contract):
    """One line of `feedback/<brand>.jsonl`: a rejected image, labelled for the next training round."""

    review_id: str
    item_id: str
    brand: str
    sku: str
    job_kind: str
    source: str | None
    content_sha256: str | None
    generated: str
    verdict: Verdict
    reason: RejectionReason | None
    note: str | None
    reviewer: str
    decided_at: datetime
    flags: tuple[str, ...] = Field(default=(), description="Codes of the automatic checks shown to the reviewer.")
    engine: str | None = None
    model: str | None = None
    model_version: str | None = None
    adapter: str | None = None
    adapter_version: str | None = None
    seed: int | None = None
    prompt: str | None = None
