"""The review service over the SQLite store and the loopback server: what a reviewer's clicks can and cannot do."""

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from functions.adapters.local.files import FileStorage, file_uri
from functions.adapters.local.publisher import FolderPublisher
from functions.adapters.local.review_server import LocalReviewServer
from functions.adapters.local.review_store import SQLiteReviewStore
from functions.review.local_flow import ReviewMode, local_service, review_run
from functions.review.service import AUTO_REVIEWER, ResumeStatus, ReviewService
from functions.review.signing import SigningKeys
from functions.review.store import StoredReview
from functions.stages.publish import publish_decisions
from schemas import QualityFlag
from schemas.review import ReviewItem, ReviewItemDetails, ReviewState, Verdict


class RecordingResumer:
    def __init__(self) -> None:
        self.resumed: list[tuple[str, str | None, str]] = []
        self.failed: list[tuple[str, str | None, str]] = []

    def resume(self, review_id, handle, outcome):
        self.resumed.append((review_id, handle, outcome))
        return ResumeStatus.RESUMED

    def fail_expired(self, review_id, handle, cause):
        self.failed.append((review_id, handle, cause))
        return ResumeStatus.RESUMED


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _items(out: Path, count: int = 3) -> list[ReviewItem]:
    items = []
    for i in range(count):
        for kind, colour in (("original", (200, 30, 30)), ("packshot", (250, 250, 250))):
            path = out / f"SKU-{i}" / f"front.{kind}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 40), colour).save(path)
        # As the checks stage makes them: images by file:// URI under OUT, each with the name it is published under.
        items.append(
            ReviewItem(
                item_id=f"item{i}",
                sku=f"SKU-{i}",
                original=file_uri(out / f"SKU-{i}" / "front.original.jpg"),
                generated=file_uri(out / f"SKU-{i}" / "front.packshot.jpg"),
                job_kind="packshot",
                flags=(QualityFlag(code="touches_edge", message="The product touches the edge."),) if i == 0 else (),
                details=ReviewItemDetails(publish_name=f"SKU-{i}/front.packshot.jpg"),
            )
        )
    return items


@pytest.fixture
def setup(tmp_path):
    clock, resumer = Clock(), RecordingResumer()
    store = SQLiteReviewStore(tmp_path / ".review" / "reviews.sqlite")
    service = ReviewService(store, SigningKeys.generate(), resumer, clock)
    task, params = service.create("acme", ["buyer@example.com"], _items(tmp_path), timedelta(hours=1), "TOKEN-123")
    return service, store, resumer, clock, task, params, tmp_path


def _post(url: str, document: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _decision_body(service, params, item_id, verdict="approved", reason=None):
    return {
        **params.as_fields(),
        "csrf": service.csrf(params),
        "decisions": [{"item_id": item_id, "verdict": verdict, "reason": reason, "note": None}],
    }


def test_get_renders_the_page_and_never_decides(setup):
    service, store, resumer, _, task, params, out = setup
    with LocalReviewServer(service, out) as server:
        # Given the emailed link, When it is fetched many times (a mail scanner, a preview, HEAD)
        for _ in range(3):
            status, headers, body = _get(server.link(params))
        head = urllib.request.Request(server.link(params), method="HEAD")
        urllib.request.urlopen(head, timeout=10).close()
        image_status, image_headers, image = _get(
            f"{server.base_url}/review/{task.review_id}/image/item0/generated?{params.query()}"
        )
    # Then the page shows the items with their warnings, with the safety headers, and nothing is decided
    assert status == 200 and b"SKU-0" in body and b"The product touches the edge." in body
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "'unsafe-inline'" not in body.decode()
    assert b"<script>" not in body and b"TOKEN-123" not in body
    assert image_status == 200 and image_headers["Content-Type"] == "image/jpeg" and image[:2] == b"\xff\xd8"
    review = store.get(task.review_id)
    assert review.decisions == {} and review.state is ReviewState.PENDING and not resumer.resumed


def test_tampered_link_gets_403_and_decides_nothing(setup):
    service, store, _, _, task, params, out = setup
    with LocalReviewServer(service, out) as server:
        bad = dict(params.as_fields(), s=params.signature[::-1])
        status_get, _, body = _get(f"{server.base_url}/review/{task.review_id}?{urllib.parse.urlencode(bad)}")
        document = _decision_body(service, params, "item1") | {"s": params.signature[::-1]}
        status_post, answer = _post(f"{server.base_url}/review/{task.review_id}", document)
        image_status, _, _ = _get(
            f"{server.base_url}/review/{task.review_id}/image/item0/original?{urllib.parse.urlencode(bad)}"
        )
    assert status_get == 403 and b"invalid or has expired" in body
    assert status_post == 403 and "error" in answer and image_status == 403
    assert store.get(task.review_id).decisions == {}


def test_missing_csrf_token_is_refused(setup):
    service, store, _, _, task, params, out = setup
    with LocalReviewServer(service, out) as server:
        status, _ = _post(
            f"{server.base_url}/review/{task.review_id}", _decision_body(service, params, "item1") | {"csrf": "x" * 43}
        )
    assert status == 403 and store.get(task.review_id).decisions == {}


def test_concurrent_posts_apply_exactly_one_decision(setup):
    service, store, _, _, task, params, out = setup
    with LocalReviewServer(service, out) as server:
        url = f"{server.base_url}/review/{task.review_id}"
        results: list[tuple[int, dict]] = []
        barrier = threading.Barrier(2)

        def click(verdict: str, reason: str | None) -> None:
            barrier.wait()
            results.append(_post(url, _decision_body(service, params, "item1", verdict, reason)))

        # Given two reviewers clicking the same item at the same moment, with different verdicts
        threads = [
            threading.Thread(target=click, args=("approved", None)),
            threading.Thread(target=click, args=("rejected", "artefacts")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # Then exactly one decision is stored, and the other click is told who decided first
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409]
    loser = next(answer for status, answer in results if status == 409)
    stored = store.get(task.review_id).decisions["item1"]
    assert loser["results"][0]["status"] == "already_decided"
    assert loser["results"][0]["decision"]["verdict"] == stored.verdict.value
    assert "Already decided" in loser["results"][0]["message"] and "buyer@example.com" in loser["results"][0]["message"]


def test_second_click_shows_already_decided_by_whom_and_when(setup):
    service, _, _, _, task, params, out = setup
    with LocalReviewServer(service, out) as server:
        form = urllib.parse.urlencode(
            {**params.as_fields(), "csrf": service.csrf(params), "item_id": "item2", "verdict": "approved"}
        ).encode()
        first = urllib.request.urlopen(f"{server.base_url}/review/{task.review_id}", data=form, timeout=10)
        with pytest.raises(urllib.error.HTTPError) as second:
            urllib.request.urlopen(f"{server.base_url}/review/{task.review_id}", data=form, timeout=10)
    assert first.status == 200
    assert second.value.code == 409
    page = second.value.read().decode()
    assert "Already decided (approved) by buyer@example.com at 2030-01-01 00:00 UTC" in page


def test_rejection_needs_a_reason_and_unknown_items_are_refused(setup):
    service, store, _, _, task, params, out = setup
    with LocalReviewServer(service, out) as server:
        url = f"{server.base_url}/review/{task.review_id}"
        no_reason, _ = _post(url, _decision_body(service, params, "item1", "rejected", None))
        unknown, _ = _post(url, _decision_body(service, params, "nope", "approved"))
    assert no_reason == 400 and unknown == 400
    assert store.get(task.review_id).decisions == {}


def test_the_last_decision_closes_the_batch_and_resumes_once_with_the_decisions(setup):
    service, _store, resumer, _, task, params, _ = setup
    csrf = service.csrf(params)
    # Given one rejection with a reason and a note, When "approve all remaining" follows, and is clicked again
    service.decide(task.review_id, params.as_fields(), csrf, [_request("item0", Verdict.REJECTED, "wrong_colour")])
    outcome = service.decide(task.review_id, params.as_fields(), csrf, [], approve_all=True)
    again = service.decide(task.review_id, params.as_fields(), csrf, [_request("item1", Verdict.REJECTED, "other")])
    # Then the batch is decided and the workflow resumed exactly once with every decision, token never in the output
    assert outcome.review.state is ReviewState.DECIDED and again.applied == 0
    assert len(resumer.resumed) == 1
    _review_id, handle, output = resumer.resumed[0]
    decisions = json.loads(output)["decisions"]
    assert handle == "TOKEN-123" and "TOKEN-123" not in output
    assert [d["verdict"] for d in decisions] == ["rejected", "approved", "approved"]
    assert decisions[0]["reason"] == "wrong_colour" and decisions[0]["note"] == "too orange"
    assert all(d["reviewer"] == "buyer@example.com" for d in decisions)


def _request(item_id, verdict, reason=None):
    from functions.review.service import DecisionRequest
    from schemas.review import RejectionReason

    return DecisionRequest(item_id, verdict, RejectionReason(reason) if reason else None, "too orange")


def test_expiry_ends_the_batch_and_refuses_later_decisions(setup):
    service, store, resumer, clock, task, params, _ = setup
    service.decide(task.review_id, params.as_fields(), service.csrf(params), [_request("item0", Verdict.APPROVED)])
    # When the link's time passes and the sweep runs
    clock.now += timedelta(hours=1, seconds=1)
    report = service.sweep(timedelta(hours=2), lambda review, link: None)
    # Then the batch is expired (the waiting side told once), and a late click is refused like a bad link
    assert report.expired == [task.review_id] and len(resumer.failed) == 1
    assert store.get(task.review_id).state is ReviewState.EXPIRED
    from functions.review.signing import LinkRefusedError

    with pytest.raises(LinkRefusedError):
        service.decide(task.review_id, params.as_fields(), service.csrf(params), [_request("item1", Verdict.APPROVED)])
    assert set(store.get(task.review_id).decisions) == {"item0"}
    assert service.sweep(timedelta(hours=2), lambda review, link: None).expired == []


class FailsOnceResumer(RecordingResumer):
    """Step Functions unreachable for the first SendTaskFailure, then back."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def fail_expired(self, review_id, handle, cause):
        self.attempts += 1
        if self.attempts == 1:
            raise ConnectionError("Step Functions did not answer")
        return super().fail_expired(review_id, handle, cause)


def test_a_failed_expiry_report_is_retried_by_the_next_sweep(setup):
    service, store, _, clock, task, _, _ = setup
    # Given a resumer whose first SendTaskFailure fails
    resumer = service.resumer = FailsOnceResumer()
    clock.now += timedelta(hours=1, seconds=1)
    # When the sweep expires the batch and reporting the expiry fails
    first = service.sweep(timedelta(hours=2), lambda review, link: None)
    assert first.expired == [task.review_id] and resumer.attempts == 1 and resumer.failed == []
    assert store.get(task.review_id).state is ReviewState.EXPIRED and store.get(task.review_id).resumed_at is None
    # Then the next sweep reports it again, and once it got through, no later sweep reports it a third time
    clock.now += timedelta(minutes=5)
    second = service.sweep(timedelta(hours=2), lambda review, link: None)
    third = service.sweep(timedelta(hours=2), lambda review, link: None)
    assert second.expiry_reported == [task.review_id] and third.expiry_reported == []
    assert resumer.attempts == 2 and [failed[:2] for failed in resumer.failed] == [(task.review_id, "TOKEN-123")]
    assert "expired with 3 of 3 item(s) undecided" in resumer.failed[0][2]
    assert store.get(task.review_id).resumed_at == clock.now


def test_store_refuses_a_decision_after_expiry_even_before_the_sweep(setup):
    _service, store, _, clock, task, _, _ = setup
    from schemas.review import ReviewDecision

    late = ReviewDecision(item_id="item1", verdict=Verdict.APPROVED, reviewer="x", decided_at=clock.now)
    result = store.decide(task.review_id, late, task.expires_at + timedelta(seconds=1))
    assert type(result).__name__ == "ReviewClosed" and result.state is ReviewState.EXPIRED


def test_reminder_is_sent_once_before_expiry(setup):
    service, store, _, clock, task, _, _ = setup
    sent = []
    clock.now = task.expires_at - timedelta(minutes=30)
    service.sweep(timedelta(hours=1), lambda review, link: sent.append((review.review_id, link)))
    service.sweep(timedelta(hours=1), lambda review, link: sent.append((review.review_id, link)))
    assert len(sent) == 1 and sent[0][0] == task.review_id
    assert store.get(task.review_id).reminder_sent_at == clock.now


def test_reissue_asks_again_for_the_undecided_items_only(setup):
    service, store, _, clock, task, params, _ = setup
    service.decide(task.review_id, params.as_fields(), service.csrf(params), [_request("item0", Verdict.APPROVED)])
    clock.now = task.expires_at
    new_task, new_params = service.reissue(task.review_id, timedelta(hours=2))
    assert store.get(task.review_id).state is ReviewState.EXPIRED
    assert [i.item_id for i in new_task.items] == ["item1", "item2"] and new_task.reissued_from == task.review_id
    assert new_params.review_id != params.review_id
    with pytest.raises(ValueError, match="only an expired review"):
        service.reissue(new_task.review_id, timedelta(hours=1))


def _publish(out: Path, review: StoredReview):
    """What the local flow does once a review ends: the publish stage with the folder adapters."""
    return publish_decisions(
        review.task.brand,
        review.review_id,
        review.task.items,
        review.decisions.values(),
        read_bytes=FileStorage([out]).read_bytes,
        publisher=FolderPublisher(out),
    )


def test_publish_never_overwrites_and_records_rejections(setup):
    service, store, _, _, task, params, out = setup
    csrf = service.csrf(params)
    service.decide(task.review_id, params.as_fields(), csrf, [_request("item0", Verdict.REJECTED, "artefacts")])
    service.decide(task.review_id, params.as_fields(), csrf, [_request("item1", Verdict.APPROVED)])
    # Given a different file already published under item2's name
    conflict = out / "approved" / "SKU-2" / "front.packshot.jpg"
    conflict.parent.mkdir(parents=True)
    conflict.write_bytes(b"someone else's file")
    service.decide(task.review_id, params.as_fields(), csrf, [_request("item2", Verdict.APPROVED)])
    review = store.get(task.review_id)

    # When the decided review is published, twice (as the local flow does after the last decision)
    first = _publish(out, review)
    second = _publish(out, review)

    # Then the approved image is published once, the existing file is reported and left alone
    assert first.published == ("approved/SKU-1/front.packshot.jpg",)
    assert first.conflicts == ("approved/SKU-2/front.packshot.jpg",)
    assert conflict.read_bytes() == b"someone else's file"
    assert second.published == () and second.already_published == ("approved/SKU-1/front.packshot.jpg",)
    # And the rejection is one feedback line with the reviewer's reason and the automatic checks' flags
    lines = (out / "feedback" / "acme.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["reason"] == "artefacts" and record["reviewer"] == "buyer@example.com" and record["sku"] == "SKU-0"
    assert record["flags"] == ["touches_edge"] and record["seed"] is None and record["adapter_version"] is None
    assert not (out / "approved" / "SKU-0").exists()


def _manifest(out: Path):
    from schemas import ManifestEntry, RunManifest, RunOptions, Status

    items = _items(out, 2)
    entries = tuple(
        ManifestEntry(
            source=f"{item.sku}/front.jpg",
            sku=item.sku,
            status=Status.SUCCEEDED,
            settings_fingerprint="f",
            outputs={"packshot": f"{item.sku}/front.packshot.jpg", "thumb_original": f"{item.sku}/front.original.jpg"},
            review_items=(item,),
        )
        for item in items
    )
    options = RunOptions(
        background="backdrop", preset="white-square", size=64, fill_ratio=0.8, output_format="jpeg", quality=90
    )
    now = datetime.now(UTC)
    return RunManifest(
        tool_version="0", started_at=now, finished_at=now, input_root="/in", options=options, entries=entries
    )


def test_review_none_publishes_nothing_and_auto_records_no_person(tmp_path):
    manifest = _manifest(tmp_path)
    none = review_run(tmp_path, manifest, ReviewMode.NONE)
    assert none.state is None and not (tmp_path / "approved").exists() and "nothing was published" in none.summary()

    auto = review_run(tmp_path, manifest, ReviewMode.AUTO)
    service, _ = local_service(tmp_path)
    review = service.store.get(auto.review_id)
    assert auto.state is ReviewState.DECIDED and auto.approved == 2
    assert {d.reviewer for d in review.decisions.values()} == {AUTO_REVIEWER}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "approved").rglob("*.jpg")) == [
        "approved/SKU-0/front.packshot.jpg",
        "approved/SKU-1/front.packshot.jpg",
    ]


def test_local_review_times_out_as_expired_and_publishes_nothing_undecided(tmp_path):
    manifest = _manifest(tmp_path)
    links = []
    result = review_run(
        tmp_path,
        manifest,
        ReviewMode.LOCAL,
        timeout=timedelta(seconds=1),
        on_link=lambda link, email: links.append((link, email)),
    )
    assert result.state is ReviewState.EXPIRED and result.pending == 2 and "reissue" in result.summary()
    assert not (tmp_path / "approved").exists()
    email = Path(links[0][1]).read_text()
    assert links[0][0].startswith("http://127.0.0.1:") and "Content-Type: text/html" in email and "text/plain" in email
