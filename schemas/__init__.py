"""Pydantic v2 contracts shared by every part of the system. Imports nothing of ours."""

from .brand import AdapterRef, BrandProfile, ModelPhoto, ScenePreset
from .checks import QualityFlag, Severity
from .jobs import JobOutput, JobRequest, JobResult
from .manifest import ManifestEntry, RunManifest, RunOptions
from .product import GarmentCategory, JobKind, ProductSidecar
from .records import Box, Cutout, IntakeInfo, ProcessedImage, ProcessingError, Status
from .review import (
    FeedbackRecord,
    GenerationProvenance,
    RejectionReason,
    ReviewDecision,
    ReviewItem,
    ReviewItemDetails,
    ReviewOutcome,
    ReviewState,
    ReviewTask,
    Verdict,
)

__all__ = [
    "AdapterRef",
    "Box",
    "BrandProfile",
    "Cutout",
    "FeedbackRecord",
    "GarmentCategory",
    "GenerationProvenance",
    "IntakeInfo",
    "JobKind",
    "JobOutput",
    "JobRequest",
    "JobResult",
    "ManifestEntry",
    "ModelPhoto",
    "ProcessedImage",
    "ProcessingError",
    "ProductSidecar",
    "QualityFlag",
    "RejectionReason",
    "ReviewDecision",
    "ReviewItem",
    "ReviewItemDetails",
    "ReviewOutcome",
    "ReviewState",
    "ReviewTask",
    "RunManifest",
    "RunOptions",
    "ScenePreset",
    "Severity",
    "Status",
    "Verdict",
]
