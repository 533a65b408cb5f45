"""A bulk backfill's batch: what a Step Functions Distributed Map (ItemReader + ItemBatcher) hands the batch Lambda,
and what the Lambda answers (the Map's ResultWriter keeps the answers in S3)."""

from pydantic import ConfigDict, Field

from ._base import Contract


class BackfillItem(Contract):
    """One object as the ItemReader lists it: an S3 ListObjectsV2 entry (`Key`, `ETag`, `Size`, ...) or an S3
    Inventory row (`Bucket`, `Key`, `VersionId`, ...). Fields S3 adds beyond these are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    key: str = Field(alias="Key", min_length=1)
    bucket: str | None = Field(default=None, alias="Bucket", min_length=3)
    version_id: str | None = Field(default=None, alias="VersionId")


class BackfillBatchInput(Contract):
    """The Map's `ItemBatcher.BatchInput`: the run's choices, the same for every batch."""

    model_config = ConfigDict(populate_by_name=True)

    bucket: str = Field(min_length=3, description="The bucket listed (an inventory row's own Bucket wins).")
    brand: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$", description="Only this brand's keys are started.")


class BackfillBatch(Contract):
    """`{"BatchInput": {...}, "Items": [...]}`, as ItemBatcher delivers it."""

    model_config = ConfigDict(populate_by_name=True)

    batch_input: BackfillBatchInput = Field(alias="BatchInput")
    items: tuple[BackfillItem, ...] = Field(alias="Items", min_length=1, max_length=1000)


class BackfillFailure(Contract):
    key: str
    reason: str


class BackfillBatchResult(Contract):
    """Counts for the batch (each item lands in exactly one) and the pace the child waits before it ends."""

    listed: int = Field(ge=0)
    started: int = Field(ge=0, description="A new execution, as ingest starts one.")
    skipped: int = Field(ge=0, description="The ledger already holds this object version.")
    dropped: int = Field(ge=0, description="Not a photo of the brand (sidecar, folder marker, other brand...).")
    failed: int = Field(ge=0)
    failures: tuple[BackfillFailure, ...] = ()
    wait_seconds: int = Field(ge=0)
