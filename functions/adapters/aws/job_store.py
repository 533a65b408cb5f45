"""GPU jobs in flight: one DynamoDB item per job attempt (partition key `job_id`, which is also the InferenceId).

The item holds the Step Functions task token, so the table is encrypted with a customer-managed KMS key and only
the three GPU job Lambdas may read it. Every state change is conditional, so duplicate SNS notifications, Lambda
retries and the reconciler can race without resuming an execution twice.

An open job (registered or in flight) carries `open_job`, which settling removes: the sparse index `open-jobs`
(`open_job`, `submitted_at`) holds the open jobs only, oldest first, so the reconciler reads a bounded page of them
instead of scanning every job ever run. Every item carries `expires_at`, the table's TTL: DynamoDB deletes it (and
its task token) `JOB_RETENTION_SECONDS` after submission, long after the longest wait for an outcome.
"""

import contextlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    REGISTERED = "registered"  # the record exists; InvokeEndpointAsync has not been confirmed yet
    IN_FLIGHT = "in_flight"  # the endpoint accepted the request
    SUCCEEDED = "succeeded"
    FAILED = "failed"


OPEN_STATES = (JobState.REGISTERED, JobState.IN_FLIGHT)

# The sparse index of open jobs (cdk/catalog_infra/gpu_endpoint.py declares the same names).
OPEN_JOBS_INDEX = "open-jobs"
OPEN_JOB_ATTRIBUTE = "open_job"  # present, with this one value, only while the job is open
OPEN_JOB_VALUE = "open"
TTL_ATTRIBUTE = "expires_at"
JOB_RETENTION_SECONDS = 14 * 24 * 3600


class Registration(StrEnum):
    NEW = "new"  # first time this job id is seen: invoke the endpoint
    NOT_INVOKED = "not_invoked"  # seen before, but the invoke never completed: invoke again (same InferenceId)
    ALREADY_INVOKED = "already_invoked"  # a duplicate delivery: the token is refreshed, nothing is invoked
    ALREADY_SETTLED = "already_settled"  # the job already has an outcome


@dataclass(frozen=True)
class StoredJob:
    job_id: str
    state: JobState
    task_token: str
    submitted_at: float
    output_location: str | None = None
    failure_location: str | None = None

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"StoredJob(job_id={self.job_id!r}, state={self.state.value!r})"


def _str(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name, {}).get("S")
    return str(value) if value is not None else None


class GpuJobStore:
    def __init__(self, client: Any, table_name: str, clock: Any = time.time) -> None:
        self.client = client
        self.table = table_name
        self.clock = clock

    def register(self, job_id: str, task_token: str, execution_arn: str | None, input_location: str) -> Registration:
        now = self.clock()
        item = {
            "job_id": {"S": job_id},
            "state": {"S": JobState.REGISTERED.value},
            "task_token": {"S": task_token},
            "input_location": {"S": input_location},
            "submitted_at": {"N": f"{now:.3f}"},
            OPEN_JOB_ATTRIBUTE: {"S": OPEN_JOB_VALUE},
            TTL_ATTRIBUTE: {"N": str(int(now) + JOB_RETENTION_SECONDS)},
        }
        if execution_arn:
            item["execution_arn"] = {"S": execution_arn}
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(job_id)")
            return Registration.NEW
        except self.client.exceptions.ConditionalCheckFailedException:
            pass
        # Seen before. Keep the newest token (a redelivered task may carry a fresh one) while the job is open.
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression="SET task_token = :token",
                ConditionExpression="#state IN (:registered, :in_flight)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":token": {"S": task_token},
                    ":registered": {"S": JobState.REGISTERED.value},
                    ":in_flight": {"S": JobState.IN_FLIGHT.value},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return Registration.ALREADY_SETTLED
        stored = self.get(job_id)
        if stored is not None and stored.state is JobState.IN_FLIGHT:
            return Registration.ALREADY_INVOKED
        return Registration.NOT_INVOKED

    def mark_in_flight(self, job_id: str, output_location: str | None, failure_location: str | None) -> None:
        names = {"#state": "state"}
        values: dict[str, Any] = {
            ":in_flight": {"S": JobState.IN_FLIGHT.value},
            ":registered": {"S": JobState.REGISTERED.value},
        }
        update = "SET #state = :in_flight"
        for name, value in (("output_location", output_location), ("failure_location", failure_location)):
            if value:
                update += f", {name} = :{name}"
                values[f":{name}"] = {"S": value}
        # Refused when an outcome already arrived (a fast job) or a duplicate got here first: nothing to record.
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=update,
                ConditionExpression="#state = :registered",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    def get(self, job_id: str) -> StoredJob | None:
        row = self.client.get_item(TableName=self.table, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get("Item")
        return None if row is None else self._from_row(row)

    @staticmethod
    def _from_row(row: dict[str, Any]) -> StoredJob:
        return StoredJob(
            job_id=row["job_id"]["S"],
            state=JobState(row["state"]["S"]),
            task_token=row["task_token"]["S"],
            submitted_at=float(row["submitted_at"]["N"]),
            output_location=_str(row, "output_location"),
            failure_location=_str(row, "failure_location"),
        )

    def settle(self, job_id: str, state: JobState) -> bool:
        """open -> succeeded | failed. True for exactly one caller."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=f"SET #state = :final, settled_at = :now REMOVE {OPEN_JOB_ATTRIBUTE}",
                ConditionExpression="#state IN (:registered, :in_flight)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":final": {"S": state.value},
                    ":now": {"N": f"{self.clock():.3f}"},
                    ":registered": {"S": JobState.REGISTERED.value},
                    ":in_flight": {"S": JobState.IN_FLIGHT.value},
                },
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False

    def open_jobs_page(
        self, cutoff: float, limit: int, start_key: dict[str, Any] | None = None
    ) -> tuple[list[StoredJob], dict[str, Any] | None]:
        """One page of open jobs submitted before `cutoff`, oldest first: at most `limit` read from the sparse index,
        each re-read consistently (the index lags the table) and dropped when it is no longer open. Returns the jobs
        and the key to continue from (None at the end)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OPEN_JOBS_INDEX,
            "KeyConditionExpression": f"{OPEN_JOB_ATTRIBUTE} = :open AND submitted_at < :cutoff",
            "ExpressionAttributeValues": {":open": {"S": OPEN_JOB_VALUE}, ":cutoff": {"N": f"{cutoff:.3f}"}},
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        page = self.client.query(**kwargs)
        jobs = [self.get(row["job_id"]["S"]) for row in page.get("Items", [])]
        return [job for job in jobs if job is not None and job.state in OPEN_STATES], page.get("LastEvaluatedKey")

    def open_jobs_submitted_before(self, cutoff: float, limit: int = 100) -> list[StoredJob]:
        """The oldest open jobs submitted before `cutoff`, at most `limit` of them."""
        jobs: list[StoredJob] = []
        start_key: dict[str, Any] | None = None
        while len(jobs) < limit:
            page, start_key = self.open_jobs_page(cutoff, limit - len(jobs), start_key)
            jobs.extend(page)
            if start_key is None:
                break
        return jobs
