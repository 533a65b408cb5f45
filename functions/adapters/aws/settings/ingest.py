"""`ingest` and `backfill_batch`: the intake ledger and the state machine to start."""

from pydantic import Field

from functions.adapters.aws.settings import DEFAULT_INTAKE_PREFIX, LambdaSettings


class IngestSettings(LambdaSettings):
    """`ingest`: SQS batch of S3 notifications -> one execution per object version."""

    ledger_table_name: str = Field(min_length=3)
    state_machine_arn: str = Field(min_length=20)
    intake_prefix: str = DEFAULT_INTAKE_PREFIX


class BackfillSettings(IngestSettings):
    """`backfill_batch`: a Distributed Map's batch of existing objects -> ingest's start, paced for the endpoint."""

    backfill_seconds_per_image: float = Field(
        default=0.0, ge=0.0, le=3600.0, description="A batch child waits this long per started image (pacing)."
    )
