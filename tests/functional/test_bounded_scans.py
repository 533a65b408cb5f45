"""The scheduled runs read bounded pages of due work, never whole tables: the GPU job reconciler and the review
digest + sweep, against moto tables holding thousands of finished items. Every DynamoDB call a run makes is counted
through a botocore hook on the client the code uses (calls per operation, items read), so the bound is measured,
not timed.
"""

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.adapters.aws.clients import client
from functions.adapters.aws.job_store import GpuJobStore
from functions.adapters.aws.review_store import DynamoDBReviewStore
from functions.handlers import reconcile_gpu_jobs
from functions.review.service import ResumeStatus, ReviewService
from functions.review.signing import SigningKeys
from schemas.review import ReviewItem

from .aws_fixtures import JOBS, REGION, FakeContext, create_resources, create_review_table

FINISHED = 3000  # settled jobs / told reviews left in each table: what a full scan would read every run
REVIEWS = "catalog-reviews"
DAY = 24 * 3600


@dataclass
class DynamoDBMeter:
    """Counts the DynamoDB calls of one client and the items they read (Query/Scan: items evaluated)."""

    calls: Counter[str] = field(default_factory=Counter)
    items_read: int = 0

    def __call__(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls[model.name] += 1
        if model.name in ("Query", "Scan"):
            self.items_read += int(parsed.get("ScannedCount", parsed.get("Count", 0)))
        elif model.name == "GetItem":
            self.items_read += int("Item" in parsed)

    def reset(self) -> None:
        self.calls.clear()
        self.items_read = 0


def write_all(dynamodb: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={table: batch})


def meter(dynamodb: Any) -> DynamoDBMeter:
    counting = DynamoDBMeter()
    dynamodb.meta.events.register("after-call.dynamodb", counting)
    return counting


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    with mock_aws():
        client.cache_clear()
        create_resources(monkeypatch)
        yield
        client.cache_clear()


# -- GPU jobs ----------------------------------------------------------------------------------------------------------


def _seed_jobs(open_jobs: int, submitted_at: float) -> None:
    """`FINISHED` settled jobs, written as the store leaves them, then `open_jobs` registered ones never answered."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    settled = [
        {
            "job_id": {"S": f"done-{n:05d}-a0"},
            "state": {"S": "succeeded"},
            "task_token": {"S": f"old-token-{n}"},
            "input_location": {"S": "s3://catalog-work/gpu/requests/x.json"},
            "submitted_at": {"N": f"{submitted_at:.3f}"},
            "settled_at": {"N": f"{submitted_at + 60:.3f}"},
        }
        for n in range(FINISHED)
    ]
    write_all(dynamodb, JOBS, settled)
    store = GpuJobStore(dynamodb, JOBS, clock=lambda: submitted_at)
    for n in range(open_jobs):
        store.register(f"open-{n:05d}-a0", f"token-{n}", "arn:exec", "s3://catalog-work/gpu/requests/o.json")
        store.mark_in_flight(f"open-{n:05d}-a0", None, None)  # no result location: the reconciler times it out


def test_the_reconciler_reads_a_bounded_page_of_open_jobs_whatever_the_table_holds(aws):
    # Given thousands of settled jobs and 260 open jobs long past their deadline
    submitted = time.time() - 2 * DAY
    _seed_jobs(open_jobs=260, submitted_at=submitted)
    dynamodb = meter(client("dynamodb"))
    bound = getattr(reconcile_gpu_jobs, "MAX_JOBS_PER_RUN", 200)  # (the old code had none: it read every job)

    # When the reconciler runs three times
    runs = []
    for _ in range(3):
        dynamodb.reset()
        counts = reconcile_gpu_jobs.reconcile(time.time())
        runs.append((counts, dynamodb.items_read, dict(dynamodb.calls)))

    # Then each run settles at most its bound, reading about that many items (never the settled ones), no scans
    (first, first_read, first_calls), (second, second_read, _), (third, third_read, third_calls) = runs
    print(f"reconciler with {FINISHED + 260} jobs: items read per run {[r[1] for r in runs]}, calls {first_calls}")
    assert first == {"timed_out": bound} and second == {"timed_out": 260 - bound} and third == {}
    assert first_read <= 2 * bound  # the index page + one consistent GetItem per open job
    assert first_calls.get("Query", 0) <= bound // getattr(reconcile_gpu_jobs, "PAGE_SIZE", 25) + 1
    assert second_read <= 2 * (260 - bound) and third_read == 0 and third_calls == {"Query": 1}
    assert "Scan" not in first_calls


def test_jobs_carry_their_ttl_and_leave_the_open_index_when_settled(aws):
    # Given a job registered and then settled
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    store = GpuJobStore(dynamodb, JOBS, clock=lambda: 1_000_000.0)
    store.register("j-a0", "token", None, "s3://catalog-work/gpu/requests/j.json")
    registered = dynamodb.get_item(TableName=JOBS, Key={"job_id": {"S": "j-a0"}})["Item"]
    store.settle("j-a0", store.get("j-a0").state.__class__("failed"))
    settled = dynamodb.get_item(TableName=JOBS, Key={"job_id": {"S": "j-a0"}})["Item"]

    # Then the item has the table's TTL attribute from the start (DynamoDB deletes it, token and all, later),
    # and only the open job was in the sparse index
    assert int(registered["expires_at"]["N"]) == 1_000_000 + 14 * DAY
    assert registered["open_job"]["S"] == "open" and "open_job" not in settled
    assert settled["expires_at"] == registered["expires_at"]


def test_the_reconciler_stops_before_the_lambda_runs_out_of_time(aws):
    # Given 60 open jobs past their deadline, and a Lambda context whose remaining time drops under the margin
    _seed_jobs(open_jobs=60, submitted_at=time.time() - 2 * DAY)
    context = FakeContext()
    checks: list[int] = []

    def remaining() -> int:
        checks.append(1)
        return 300_000 if len(checks) <= 11 else 10_000  # enough for the first ten jobs, then too little

    context.get_remaining_time_in_millis = remaining  # type: ignore[method-assign]

    # When the scheduled handler runs, Then it settled the first jobs and stopped, leaving the rest for the next run
    counts = reconcile_gpu_jobs.lambda_handler({}, context)
    assert counts == {"timed_out": 10, "stopped_early": 1}
    assert reconcile_gpu_jobs.reconcile(time.time()) == {"timed_out": 50}


# -- reviews -----------------------------------------------------------------------------------------------------------


class Resumer:
    def __init__(self) -> None:
        self.told: list[str] = []

    def resume(self, review_id: str, handle: str | None, outcome: str) -> ResumeStatus:
        self.told.append(review_id)
        return ResumeStatus.RESUMED

    def fail_expired(self, review_id: str, handle: str | None, cause: str) -> ResumeStatus:
        self.told.append(review_id)
        return ResumeStatus.RESUMED


def _seed_finished_reviews(dynamodb: Any) -> None:
    """Reviews decided and resumed long ago, with their item rows, and their batches: nothing left to do."""
    rows = []
    for n in range(FINISHED // 3):
        review_id = f"old{n:05d}"
        rows.append(
            {
                "pk": {"S": review_id},
                "sk": {"S": "review"},
                "state": {"S": "decided"},
                "resumed_at": {"S": "2030-01-01T00:00:00+00:00"},
                "expires_at": {"N": "1893456000"},
            }
        )
        rows.append({"pk": {"S": review_id}, "sk": {"S": "item#a"}, "state": {"S": "decided"}})
        rows.append({"pk": {"S": f"b{n:05d}"}, "sk": {"S": "batch"}})
    write_all(dynamodb, REVIEWS, rows)


def _items(n: int) -> list[ReviewItem]:
    return [
        ReviewItem(
            item_id=f"img{n}-{kind}",
            sku=f"SKU-{n % 7}",
            original="s3://catalog-work/prepared/x/original.jpg",
            generated=f"s3://catalog-work/gpu/outputs/{n}/{kind}.png",
            job_kind=kind,
        )
        for kind in ("packshot", "lifestyle")
    ]


def test_digest_and_sweep_read_bounded_pages_whatever_the_table_holds(aws, monkeypatch):
    # Given per-run bounds of 100 reviews for the digest and 40 for the sweep (the deployed ones are 500 and 200:
    # moto copies every table for each transaction, so fewer reviews keep this test quick; the mechanism is the same)
    from functions.review import service as review_service

    monkeypatch.setattr(review_service, "DIGEST_MAX_REVIEWS", 100, raising=False)
    monkeypatch.setattr(review_service, "SWEEP_MAX_REVIEWS", 40, raising=False)
    # And 150 images' reviews awaiting the digest, then thousands of finished rows
    dynamodb_client = client("dynamodb")
    create_review_table(dynamodb_client, REVIEWS)
    now = datetime(2030, 6, 1, tzinfo=UTC)
    clock = {"now": now}
    store = DynamoDBReviewStore(dynamodb_client, REVIEWS)
    resumer = Resumer()
    service = ReviewService(store, SigningKeys.generate(), resumer, lambda: clock["now"], batches=store)
    for n in range(150):
        service.create("acme", ["buyer@acme.example"], _items(n), timedelta(hours=72), f"token-{n}", None, True)
    _seed_finished_reviews(dynamodb_client)
    dynamodb = meter(dynamodb_client)
    sent: list[str] = []

    def send(review: Any, link: Any) -> None:
        sent.append(review.review_id)

    # When the digest runs three times
    digests = []
    for _ in range(3):
        dynamodb.reset()
        emailed = service.digest(send)
        digests.append((len(emailed), dynamodb.items_read, dict(dynamodb.calls)))
    print(f"digest, {FINISHED} finished rows + 150 awaiting: (emails, items read, calls) per run {digests}")

    # Then each run reads at most its bound of awaiting reviews (100: two emails of 50) and no finished row:
    # per review its index row and its task; per batch its index row, its row, and its members' rows for the email
    (first, first_read, first_calls), (second, second_read, _), (third, third_read, _) = digests
    assert (first, second, third) == (2, 1, 0) and len(sent) == 3
    assert first_read <= 100 * 2 + 2 * (2 + 50 * 3)
    assert second_read <= 50 * 2 + 1 * (2 + 50 * 3) and third_read == 0
    assert "Scan" not in first_calls

    # When the links expire and the sweep runs until nothing is left
    clock["now"] = now + timedelta(hours=73)
    sweeps = []
    while len(sweeps) < 10:
        dynamodb.reset()
        report = service.sweep(timedelta(hours=24), send)
        sweeps.append((len(report.expired), dynamodb.items_read, dict(dynamodb.calls)))
        if not report.expired:
            break
    print(f"sweep after expiry: (expired, items read, calls) per run {sweeps}")

    # Then each run expired at most its bound, each workflow was told once, and the last run read nothing:
    # per review its index row, its rows (head + 2 items), then its rows and its token again to report the expiry
    assert [expired for expired, _, _ in sweeps] == [40, 40, 40, 30, 0]
    assert sorted(resumer.told) == sorted(set(resumer.told)) and len(resumer.told) == 150
    assert all(read <= 40 * (1 + 3 + 3 + 1) for _, read, _ in sweeps) and sweeps[-1][1] == 0
    assert all("Scan" not in calls for _, _, calls in sweeps)


def test_the_sweep_stops_before_the_lambda_runs_out_of_time_and_the_next_run_goes_on(aws):
    # Given 30 reviews past their expiry
    dynamodb_client = client("dynamodb")
    create_review_table(dynamodb_client, REVIEWS)
    now = datetime(2030, 6, 1, tzinfo=UTC)
    clock = {"now": now}
    store = DynamoDBReviewStore(dynamodb_client, REVIEWS)
    resumer = Resumer()
    service = ReviewService(store, SigningKeys.generate(), resumer, lambda: clock["now"], batches=store)
    for n in range(30):
        service.create("acme", ["buyer@acme.example"], _items(n), timedelta(hours=1), f"token-{n}")
    clock["now"] = now + timedelta(hours=2)
    left = iter([300_000] * 12 + [5_000] * 100)

    # When the sweep runs with time for a dozen reviews only, Then it stops early, and the next run finishes
    first = service.sweep(timedelta(hours=24), lambda review, link: None, time_left_ms=lambda: next(left))
    second = service.sweep(timedelta(hours=24), lambda review, link: None)
    assert first.stopped_early and len(first.expired) == 12
    assert len(second.expired) == 18 and not second.stopped_early
    assert len(set(first.expired) | set(second.expired)) == 30 == len(resumer.told)
