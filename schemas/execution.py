"""What one workflow execution starts with: the object version `ingest` saw arrive. It refers to no other contract,
so the light `ingest` Lambda imports it without the rest of the workflow's models (`schemas/workflow.py`)."""

from pydantic import ConfigDict, Field

from ._base import Contract


class ExecutionInput(Contract):
    """One object version that arrived under `incoming/<brand>/<sku>/`: what `ingest` starts an execution with."""

    # An S3 key is exact: stripping `SKU-1\u00a0/` or `front.jpg ` would name another object (or none at all).
    model_config = ConfigDict(str_strip_whitespace=False)  # merged with Contract's (frozen, extra="forbid")

    bucket: str = Field(min_length=3)
    key: str = Field(min_length=1)
    version_id: str | None = None
    etag: str | None = None
    size: int = Field(ge=0)
    brand: str = Field(min_length=1, max_length=128)
    sku: str = Field(min_length=1)
    filename: str = Field(min_length=1)
    image_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{8,96}$")
