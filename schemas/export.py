"""Write every contract's JSON Schema, for callers that are not Python."""

import json
from pathlib import Path

from pydantic import BaseModel

from . import (
    BrandProfile,
    FeedbackRecord,
    JobRequest,
    JobResult,
    ProcessedImage,
    ProductSidecar,
    ReviewDecision,
    ReviewOutcome,
    ReviewTask,
    RunManifest,
)
from .brand_versions import BrandVersion, PromotionRecord
from .execution import ExecutionInput
from .shopify import ShopifySettings
from .workflow import ChecksInput, PreparedImage, PublishInput, PublishResult, ReviewRequest

EXPORTED: dict[str, type[BaseModel]] = {
    "product-sidecar": ProductSidecar,
    "processed-image": ProcessedImage,
    "job-request": JobRequest,
    "job-result": JobResult,
    "review-task": ReviewTask,
    "review-decision": ReviewDecision,
    "review-outcome": ReviewOutcome,
    "feedback-record": FeedbackRecord,
    "brand-profile": BrandProfile,
    "run-manifest": RunManifest,
    "execution-input": ExecutionInput,
    "prepared-image": PreparedImage,
    "checks-input": ChecksInput,
    "review-request": ReviewRequest,
    "publish-input": PublishInput,
    "publish-result": PublishResult,
    "shopify-settings": ShopifySettings,  # <brands>/<brand>/shopify.json
    "brand-version": BrandVersion,  # <brands>/<brand>/versions/<name>@v<N>/version.json
    "promotion-record": PromotionRecord,  # <brands>/<brand>/promotions/<seq>.json
}


def write_json_schemas(directory: Path) -> list[Path]:
    """Write `<name>.schema.json` for each exported contract; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTED.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"{name}.schema.json"
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
