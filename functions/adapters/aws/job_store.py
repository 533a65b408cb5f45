"""GPU jobs in flight: one DynamoDB item per job attempt (partition key `job_id`, which is also the InferenceId).

The item holds the Step Functions task token, so the table is encrypted with a customer-managed KMS key and only
the three GPU job Lambdas may read it. Every state change is conditional, so duplicate SNS notifications, Lambda
retries and the reconciler can race without resuming an execution twice.
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
        item = {
            "job_id": {"S": job_id},
            "state": {"S": JobState.REGISTERED.value},
            "task_token": {"S": task_token},
            "input_location": {"S": input_location},
            "submitted_at": {"N": f"{self.clock():.3f}"},
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
                UpdateExpression="SET #state = :final, settled_at = :now",
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

    def open_jobs_submitted_before(self, cutoff: float) -> list[StoredJob]:
        # A filtered scan is fine for the hundreds of jobs in flight at once; a sparse GSI on open jobs can replace it.
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "#state IN (:registered, :in_flight) AND submitted_at < :cutoff",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {
                ":registered": {"S": JobState.REGISTERED.value},
                ":in_flight": {"S": JobState.IN_FLIGHT.value},
                ":cutoff": {"N": f"{cutoff:.3f}"},
            },
            "ConsistentRead": True,
        }
        jobs: list[StoredJob] = []
        while True:
            page = self.client.scan(**kwargs)
            jobs.extend(self._from_row(row) for row in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return jobs
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
