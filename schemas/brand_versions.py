"""A brand's trained versions (`name@vN`) and its promotion log, as the brand store keeps them.

`<brands>/<brand>/versions/<name>@v<N>/version.json` is written last: a version without it does not exist.
`<brands>/<brand>/promotions/<seq>.json` is append-only; the latest record says which version is active.
"""

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ._base import Contract

VERSION_NAME = r"^[a-z0-9][a-z0-9_\-]{0,47}$"
VERSION_REF = r"^[a-z0-9][a-z0-9_\-]{0,47}@v[1-9][0-9]{0,5}$"


class BrandVersion(Contract):
    """One registered training run: its files (relative to the version's folder) and what made it."""

    brand: str
    name: str = Field(pattern=VERSION_NAME)
    number: int = Field(ge=1)
    ref: str = Field(pattern=VERSION_REF, description="`<name>@v<N>`, as promote and the GPU jobs' records name it.")
    created_at: datetime
    run_key: str = Field(description="Brand, name, dataset and settings hashed: a re-run of the same training.")
    source: str = Field(description="`local` or `sagemaker:<training job name>`.")
    files: dict[str, str] = Field(description="Relative file name -> sha256 of its bytes.")
    adapter_file: str = "pytorch_lora_weights.safetensors"
    embeddings_file: str | None = Field(default=None, description="Pivotal tuning's `learned_embeds.safetensors`.")
    trigger_token: str | None = None
    dataset_sha256: str | None = None
    base_model: str | None = None
    steps: int | None = None


class PromotionAction(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class PromotionRecord(Contract):
    """One change of the active version; never rewritten. `stack` is the active history after it (newest last)."""

    seq: int = Field(ge=1)
    brand: str
    action: PromotionAction
    version: str = Field(pattern=VERSION_REF, description="The version active after this record.")
    previous: str | None = None
    stack: tuple[str, ...] = Field(description="Versions a rollback returns to, oldest first; the last is active.")
    at: datetime
    actor: str
    forced_reason: str | None = None
    gate_passed: bool | None = Field(default=None, description="None when no gate ran (rollback, or no gate set).")
    gate_reasons: tuple[str, ...] = ()
    gate_report_uri: str | None = None
