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
from .workflow import (
    ChecksInput,
    ExecutionInput,
    GpuJobTask,
    PreparedFiles,
    PreparedImage,
    PublishInput,
    PublishResult,
    ResolvedBrand,
    ReviewRequest,
)

__all__ = [
    "AdapterRef",
    "Box",
    "BrandProfile",
    "ChecksInput",
    "Cutout",
    "ExecutionInput",
    "FeedbackRecord",
    "GarmentCategory",
    "GenerationProvenance",
    "GpuJobTask",
    "IntakeInfo",
    "JobKind",
    "JobOutput",
    "JobRequest",
    "JobResult",
    "ManifestEntry",
    "ModelPhoto",
    "PreparedFiles",
    "PreparedImage",
    "ProcessedImage",
    "ProcessingError",
    "ProductSidecar",
    "PublishInput",
    "PublishResult",
    "QualityFlag",
    "RejectionReason",
    "ResolvedBrand",
    "ReviewDecision",
    "ReviewItem",
    "ReviewItemDetails",
    "ReviewOutcome",
    "ReviewRequest",
    "ReviewState",
    "ReviewTask",
    "RunManifest",
    "RunOptions",
    "ScenePreset",
    "Severity",
    "Status",
    "Verdict",
]
