"""Pydantic v2 contracts shared by every part of the system. Imports nothing of ours.

Lazy (PEP 562): `from schemas import X` imports only the module that defines X, so a light Lambda that reads one
contract does not build them all at its cold start (they cost ~30 ms together). Type checkers read the imports
under TYPE_CHECKING; `_MODULE_OF` names the same modules for the interpreter, and a test checks the two agree.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .brand import AdapterRef, BrandProfile, ModelPhoto, ScenePreset
    from .checks import QualityFlag, Severity
    from .execution import ExecutionInput
    from .jobs import GpuJobTask, JobOutput, JobRequest, JobResult
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
        ReviewRequest,
        ReviewState,
        ReviewTask,
        Verdict,
    )
    from .workflow import (
        ChecksInput,
        PreparedFiles,
        PreparedImage,
        PublishInput,
        PublishResult,
        ResolvedBrand,
    )

# Public name -> the submodule that defines it.
_MODULE_OF: dict[str, str] = {
    "AdapterRef": "brand",
    "Box": "records",
    "BrandProfile": "brand",
    "ChecksInput": "workflow",
    "Cutout": "records",
    "ExecutionInput": "execution",
    "FeedbackRecord": "review",
    "GarmentCategory": "product",
    "GenerationProvenance": "review",
    "GpuJobTask": "jobs",
    "IntakeInfo": "records",
    "JobKind": "product",
    "JobOutput": "jobs",
    "JobRequest": "jobs",
    "JobResult": "jobs",
    "ManifestEntry": "manifest",
    "ModelPhoto": "brand",
    "PreparedFiles": "workflow",
    "PreparedImage": "workflow",
    "ProcessedImage": "records",
    "ProcessingError": "records",
    "ProductSidecar": "product",
    "PublishInput": "workflow",
    "PublishResult": "workflow",
    "QualityFlag": "checks",
    "RejectionReason": "review",
    "ResolvedBrand": "workflow",
    "ReviewDecision": "review",
    "ReviewItem": "review",
    "ReviewItemDetails": "review",
    "ReviewOutcome": "review",
    "ReviewRequest": "review",
    "ReviewState": "review",
    "ReviewTask": "review",
    "RunManifest": "manifest",
    "RunOptions": "manifest",
    "ScenePreset": "brand",
    "Severity": "checks",
    "Status": "records",
    "Verdict": "review",
}


def _lazy_attribute(name: str) -> Any:
    """Import the submodule defining `name` on first use and keep the value, so the next lookup is a plain one."""
    if name in _MODULE_OF:
        # `__import__` rather than importlib.import_module: the same import, but `-X importtime` reports it.
        value = getattr(__import__(f"{__name__}.{_MODULE_OF[name]}", fromlist=[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if not TYPE_CHECKING:  # mypy reads the imports above; a module __getattr__ would make any misspelt name Any
    __getattr__ = _lazy_attribute

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
