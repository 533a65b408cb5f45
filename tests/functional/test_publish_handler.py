"""`publish` and `publish_to_s3` against moto: approved images reach the output bucket and are never written over,
rejections become feedback lines a training job can read back, and a second run with the same input changes nothing.
"""

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from functions.handlers import publish
from functions.review.publish import publish_to_s3
from functions.review.store import StoredReview
from schemas.review import FeedbackRecord, ReviewDecision, ReviewItem, ReviewState, ReviewTask, Verdict

from .aws_fixtures import REGION, WORK, FakeContext, create_resources

OUTPUT = "catalog-output"
REVIEW_ID = "rev-0123456789abcdef"
REVIEWER = "buyer@acme.example"
SHA = "ab" * 32
DECIDED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    monkeypatch.setenv("OUTPUT_BUCKET", OUTPUT)
    with mock_aws():
        publish.client.cache_clear()
        create_resources(monkeypatch)
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=OUTPUT)
        # Versioned, so "written once" can be checked: a replaced object would leave a second version.
        client.put_bucket_versioning(Bucket=OUTPUT, VersioningConfiguration={"Status": "Enabled"})
        yield client
        publish.client.cache_clear()
        publish.settings.load.cache_clear()


def generated(s3, key: str, body: bytes, content_type: str = "image/jpeg") -> str:
    s3.put_object(Bucket=WORK, Key=key, Body=body, ContentType=content_type)
    return f"s3://{WORK}/{key}"


def item(item_id: str, uri: str, sku: str = "SKU-1", kind: str = "packshot", **provenance) -> dict:
    """A review item as `automatic_checks` returns it (JSON)."""
    return ReviewItem(
        item_id=item_id,
        sku=sku,
        original=f"s3://{WORK}/prepared/img1/normalised.png",
        generated=uri,
        job_kind=kind,
        flags=({"code": "touches_edge", "message": "The product touches the edge."},),
        details={
            "source": "s3://catalog-intake/incoming/acme/SKU-1/front.jpg",
            "content_sha256": SHA,
            "provenance": provenance,
        },
    ).model_dump(mode="json")


def approve(item_id: str) -> dict:
    return {"item_id": item_id, "verdict": "approved", "reviewer": REVIEWER, "decided_at": DECIDED_AT.isoformat()}


def reject(item_id: str, reason: str = "wrong_colour", note: str | None = "Too blue") -> dict:
    return {**approve(item_id), "verdict": "rejected", "reason": reason, "note": note}


def event(items: list[dict], decisions: list[dict], brand: str = "acme") -> dict:
    """The publish task's input: `$.review` (automatic checks' output) and `$.outcome` (the review's decisions)."""
    return {
        "review": {"brand": brand, "reviewers": [REVIEWER], "items": items},
        "outcome": {"review_id": REVIEW_ID, "state": "decided", "decisions": decisions},
    }


def run(payload: dict) -> dict:
    return publish.lambda_handler(payload, FakeContext())


def versions(s3, prefix: str = "") -> list[tuple[str, str]]:
    listed = s3.list_object_versions(Bucket=OUTPUT, Prefix=prefix).get("Versions", [])
    return sorted((v["Key"], v["VersionId"]) for v in listed)


def body(s3, key: str) -> bytes:
    return s3.get_object(Bucket=OUTPUT, Key=key)["Body"].read()


def test_approved_images_are_copied_to_the_output_bucket(s3):
    # Given two approved items: a JPEG packshot and a PNG lifestyle image
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"packshot jpeg bytes")
    scene = generated(s3, "gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", b"scene png bytes", "image/png")
    items = [item("img1-packshot", packshot), item("img1-lifestyle-0", scene, kind="lifestyle")]

    # When publish runs with both approved
    report = run(event(items, [approve("img1-packshot"), approve("img1-lifestyle-0")]))

    # Then both are in the output bucket under approved/<brand>/<sku>/<item id>.<ext>, same bytes and content type
    assert report["published"] == [
        f"s3://{OUTPUT}/approved/acme/SKU-1/img1-packshot.jpg",
        f"s3://{OUTPUT}/approved/acme/SKU-1/img1-lifestyle-0.png",
    ]
    assert report["published_count"] == 2 and report["rejected_count"] == 0 and report["conflicts"] == []
    stored = s3.get_object(Bucket=OUTPUT, Key="approved/acme/SKU-1/img1-packshot.jpg")
    assert stored["Body"].read() == b"packshot jpeg bytes" and stored["ContentType"] == "image/jpeg"
    assert s3.get_object(Bucket=OUTPUT, Key="approved/acme/SKU-1/img1-lifestyle-0.png")["ContentType"] == "image/png"
    # And no feedback is written when nothing was rejected
    assert versions(s3, "feedback/") == []


def test_an_existing_object_with_other_bytes_is_reported_and_left_alone(s3):
    # Given an image already published at the target key, with different bytes
    s3.put_object(Bucket=OUTPUT, Key="approved/acme/SKU-1/img1-packshot.jpg", Body=b"what the shop shows today")
    before = versions(s3)
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"a new packshot")

    # When publish runs with the new image approved
    report = run(event([item("img1-packshot", packshot)], [approve("img1-packshot")]))

    # Then it finishes, reports the conflict, and the published object is untouched (no new version)
    assert report["conflicts"] == [f"s3://{OUTPUT}/approved/acme/SKU-1/img1-packshot.jpg"]
    assert report["published"] == [] and report["published_count"] == 0
    assert body(s3, "approved/acme/SKU-1/img1-packshot.jpg") == b"what the shop shows today"
    assert versions(s3) == before


def test_rejections_become_feedback_lines_readable_back(s3):
    # Given one approved item and two rejected ones, one generated by a GPU job with known provenance
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"packshot")
    scene = generated(s3, "gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", b"scene", "image/png")
    ghost = generated(s3, "gpu/outputs/img1/ghost_mannequin/a0/ghost_0.png", b"ghost", "image/png")
    items = [
        item("img1-packshot", packshot, engine="backdrop"),
        item("img1-lifestyle-0", scene, kind="lifestyle", engine="lifestyle", model_version="sdxl-1.0", seed=7),
        item("img1-ghost-0", ghost, kind="ghost_mannequin", engine="ghost_mannequin"),
    ]
    decisions = [approve("img1-packshot"), reject("img1-lifestyle-0"), reject("img1-ghost-0", "artefacts", None)]

    # When publish runs
    report = run(event(items, decisions))

    # Then the rejected images are not published, and one JSON Lines object holds a record per rejection
    assert report["rejected"] == ["img1-lifestyle-0", "img1-ghost-0"] and report["rejected_count"] == 2
    assert [key for key, _ in versions(s3, "approved/")] == ["approved/acme/SKU-1/img1-packshot.jpg"]
    stored = s3.get_object(Bucket=OUTPUT, Key=f"feedback/acme/{REVIEW_ID}.jsonl")
    assert stored["ContentType"] == "application/x-ndjson"
    lines = stored["Body"].read().decode().splitlines()
    records = {record.item_id: record for record in map(FeedbackRecord.model_validate_json, lines)}
    assert sorted(records) == ["img1-ghost-0", "img1-lifestyle-0"]
    scene_record = records["img1-lifestyle-0"]
    # With the reason, the reviewer, and what made the image
    assert scene_record.verdict is Verdict.REJECTED
    assert (scene_record.reason, scene_record.note, scene_record.reviewer) == ("wrong_colour", "Too blue", REVIEWER)
    assert (scene_record.engine, scene_record.model_version, scene_record.seed) == ("lifestyle", "sdxl-1.0", 7)
    assert scene_record.generated == scene and scene_record.job_kind == "lifestyle"
    assert scene_record.source == "s3://catalog-intake/incoming/acme/SKU-1/front.jpg"
    assert scene_record.content_sha256 == SHA and scene_record.flags == ("touches_edge",)
    assert (scene_record.review_id, scene_record.brand, scene_record.decided_at) == (REVIEW_ID, "acme", DECIDED_AT)
    assert records["img1-ghost-0"].reason == "artefacts" and records["img1-ghost-0"].note is None


def test_the_same_input_twice_publishes_and_records_nothing_twice(s3):
    # Given a batch with one approval and one rejection, published once
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"packshot")
    scene = generated(s3, "gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", b"scene", "image/png")
    payload = event(
        [item("img1-packshot", packshot), item("img1-lifestyle-0", scene, kind="lifestyle")],
        [approve("img1-packshot"), reject("img1-lifestyle-0")],
    )
    first = run(payload)
    after_first = versions(s3)

    # When the task runs again with the same input (a Lambda retry)
    second = run(payload)

    # Then no object gained a version, the image counts as already published (so the workflow still ends
    # "Published"), and the feedback object still holds one line
    assert versions(s3) == after_first and len(after_first) == 2
    assert second["published"] == [] and second["already_published"] == first["published"]
    assert second["published_count"] == first["published_count"] == 1
    assert second["conflicts"] == []
    assert len(body(s3, f"feedback/acme/{REVIEW_ID}.jsonl").splitlines()) == 1


def test_feedback_already_there_with_other_content_is_reported_not_replaced(s3):
    # Given a feedback object for this review that holds something else
    key = f"feedback/acme/{REVIEW_ID}.jsonl"
    s3.put_object(Bucket=OUTPUT, Key=key, Body=b'{"other": "line"}\n')
    scene = generated(s3, "gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", b"scene", "image/png")

    # When publish records a rejection for that review
    report = run(event([item("img1-lifestyle-0", scene, kind="lifestyle")], [reject("img1-lifestyle-0")]))

    # Then the existing object is kept, and the report says the feedback could not be written
    assert body(s3, key) == b'{"other": "line"}\n'
    assert report["conflicts"] == [f"s3://{OUTPUT}/{key}"]


def test_brand_sku_and_item_id_cannot_escape_the_approved_prefix(s3):
    # Given brand, SKU and item id with slashes and dot-dot segments, When the item is approved
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"packshot")
    report = run(event([item("../x", packshot, sku="SKU 1/../..")], [approve("../x")], brand="a/../b"))
    # Then the object lands at approved/<brand>/<sku>/<item>.jpg, one folder level each, with no ".." segment
    (published,) = report["published"]
    parts = published.removeprefix(f"s3://{OUTPUT}/").split("/")
    assert parts[0] == "approved" and len(parts) == 4 and ".." not in parts and parts[-1].endswith(".jpg")


def test_a_decision_for_an_unknown_item_fails_the_task(s3):
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"packshot")
    with pytest.raises(ValueError, match="img9"):
        run(event([item("img1-packshot", packshot)], [approve("img9")]))
    assert versions(s3) == []


# publish_to_s3: the review service's twin of the handler (a StoredReview instead of the workflow's JSON).


def stored_review(items: list[dict], decisions: list[dict]) -> StoredReview:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    task = ReviewTask(
        review_id=REVIEW_ID,
        brand="acme",
        reviewers=(REVIEWER,),
        items=tuple(ReviewItem.model_validate(entry) for entry in items),
        created_at=now,
        expires_at=now + timedelta(days=3),
    )
    by_id = {decision["item_id"]: ReviewDecision.model_validate(decision) for decision in decisions}
    return StoredReview(task=task, state=ReviewState.DECIDED, identity=REVIEWER, decisions=by_id)


def publish_review(s3, review: StoredReview):
    return publish_to_s3(s3, review, OUTPUT, "approved/", "feedback/")


def test_publish_to_s3_copies_approved_images_once_and_records_rejections(s3):
    # Given a decided review: one approved packshot, one rejected lifestyle image
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"packshot")
    scene = generated(s3, "gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", b"scene", "image/png")
    review = stored_review(
        [item("img1-packshot", packshot), item("img1-lifestyle-0", scene, kind="lifestyle", seed=3)],
        [approve("img1-packshot"), reject("img1-lifestyle-0")],
    )

    # When it is published twice
    first = publish_review(s3, review)
    after_first = versions(s3)
    second = publish_review(s3, review)

    # Then the approved image is in the output bucket with its content type, written once
    (published,) = first.published
    key = published.removeprefix(f"s3://{OUTPUT}/")
    stored = s3.get_object(Bucket=OUTPUT, Key=key)
    assert stored["Body"].read() == b"packshot" and stored["ContentType"] == "image/jpeg"
    assert key.startswith("approved/") and "SKU-1" in key
    assert second.published == [] and second.already_published == first.published and second.conflicts == []
    assert versions(s3) == after_first
    # And the rejection is one feedback line, readable back, recorded once
    assert first.feedback == second.feedback == f"s3://{OUTPUT}/feedback/acme/{REVIEW_ID}.jsonl"
    lines = body(s3, f"feedback/acme/{REVIEW_ID}.jsonl").decode().splitlines()
    (record,) = [FeedbackRecord.model_validate_json(line) for line in lines]
    assert (record.item_id, record.reason, record.reviewer) == ("img1-lifestyle-0", "wrong_colour", REVIEWER)
    assert record.seed == 3


def test_publish_to_s3_keeps_two_photos_of_one_sku_apart(s3):
    # Given two approved packshots of the same SKU (front and back photos: both named packshot.jpg by prepare)
    front = generated(s3, "prepared/img1/packshot.jpg", b"front packshot")
    back = generated(s3, "prepared/img2/packshot.jpg", b"back packshot")
    review = stored_review(
        [item("img1-packshot", front), item("img2-packshot", back)],
        [approve("img1-packshot"), approve("img2-packshot")],
    )

    # When the review is published
    report = publish_review(s3, review)

    # Then both are published, each with its own bytes: neither is mistaken for a conflict with the other
    assert report.conflicts == [] and len(report.published) == 2
    published = {body(s3, uri.removeprefix(f"s3://{OUTPUT}/")) for uri in report.published}
    assert published == {b"front packshot", b"back packshot"}


def test_publish_to_s3_never_replaces_an_existing_object(s3):
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"new packshot")
    review = stored_review([item("img1-packshot", packshot)], [approve("img1-packshot")])
    (target,) = publish_review(s3, review).published
    key = target.removeprefix(f"s3://{OUTPUT}/")
    s3.put_object(Bucket=WORK, Key="prepared/img1/packshot.jpg", Body=b"regenerated packshot")
    before = versions(s3)

    report = publish_review(s3, review)

    assert report.conflicts == [target] and report.published == []
    assert body(s3, key) == b"new packshot" and versions(s3) == before


def test_publish_to_s3_with_nothing_rejected_writes_no_feedback(s3):
    packshot = generated(s3, "prepared/img1/packshot.jpg", b"packshot")
    report = publish_review(s3, stored_review([item("img1-packshot", packshot)], [approve("img1-packshot")]))
    assert report.feedback is None and report.feedback_records == 0
    assert versions(s3, "feedback/") == []


def test_publish_to_s3_reports_feedback_it_could_not_write(s3):
    # Given other lines already stored as this review's feedback
    key = f"feedback/acme/{REVIEW_ID}.jsonl"
    s3.put_object(Bucket=OUTPUT, Key=key, Body=b'{"other": "line"}\n')
    scene = generated(s3, "gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", b"scene", "image/png")
    review = stored_review([item("img1-lifestyle-0", scene, kind="lifestyle")], [reject("img1-lifestyle-0")])

    # When the review is published, Then the stored lines are kept and the report names the conflict
    report = publish_review(s3, review)
    assert body(s3, key) == b'{"other": "line"}\n'
    assert report.conflicts == [f"s3://{OUTPUT}/{key}"] and report.feedback is None
