"""Human review: what a reviewer is asked to decide, and what they decided."""

from datetime import datetime
from enum import StrEnum

from pydantic import EmailStr, Field, model_validator

from ._base import Contract
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


class ReviewItem(Contract):
    """One generated image awaiting a decision, shown beside its original."""

    item_id: str = Field(min_length=1, max_length=128)
    sku: str
    original: str = Field(description="URI or path of the original photo.")
    generated: str
    job_kind: str
    flags: tuple[QualityFlag, ...] = ()


class ReviewTask(Contract):
    """A batch sent to reviewers in one email. The resume handle never appears here."""

    review_id: str = Field(min_length=16, max_length=128)
    brand: str
    reviewers: tuple[EmailStr, ...] = Field(min_length=1)
    items: tuple[ReviewItem, ...] = Field(min_length=1)
    created_at: datetime
    expires_at: datetime


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
