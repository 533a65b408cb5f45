"""`publish` against moto: approved images reach the output bucket under their published names, carrying what made
them as metadata, and are never written over; rejections become feedback lines a training job can read back; a
second run with the same input changes nothing."""

import io
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from functions.adapters.aws import job_outcomes, settings
from functions.handlers import automatic_checks, publish
from schemas import (
    ChecksInput,
    Cutout,
    FeedbackRecord,
    GenerationProvenance,
    IntakeInfo,
    JobKind,
    JobOutput,
    JobResult,
    PreparedFiles,
    PreparedImage,
    PublishInput,
    PublishResult,
    QualityFlag,
    RejectionReason,
    ResolvedBrand,
    ReviewDecision,
    ReviewItem,
    ReviewItemDetails,
    ReviewOutcome,
    ReviewRequest,
    ReviewState,
    Status,
    Verdict,
)

from .aws_fixtures import REGION, WORK, FakeContext, create_resources

OUTPUT = "catalog-output"
IMAGE_ID = "0123456789abcdef"
REVIEW_ID = "rev-0123456789abcdef"
REVIEWER = "buyer@acme.example"
SHA = "ab" * 32
SOURCE = "s3://catalog-intake/incoming/acme/SKU-1/front.jpg"
DECIDED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    monkeypatch.setenv("OUTPUT_BUCKET", OUTPUT)
    with mock_aws():
        publish.client.cache_clear()
        automatic_checks.client.cache_clear()
        create_resources(monkeypatch)
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=OUTPUT)
        # Versioned, so "written once" can be checked: a replaced object would leave a second version.
        client.put_bucket_versioning(Bucket=OUTPUT, VersioningConfiguration={"Status": "Enabled"})
        yield client
        publish.client.cache_clear()
        automatic_checks.client.cache_clear()
        settings.load.cache_clear()


def generated(s3, key: str, body: bytes, content_type: str = "image/jpeg") -> str:
    s3.put_object(Bucket=WORK, Key=key, Body=body, ContentType=content_type)
    return f"s3://{WORK}/{key}"


def item(
    item_id: str,
    uri: str,
    publish_name: str | None,
    sku: str = "SKU-1",
    kind: str = "packshot",
    **provenance,
) -> ReviewItem:
    """A review item as `automatic_checks` makes it."""
    return ReviewItem(
        item_id=item_id,
        sku=sku,
        original=f"s3://{WORK}/prepared/{IMAGE_ID}/preview.original.jpg",
        generated=uri,
        job_kind=kind,
        flags=(QualityFlag(code="touches_edge", message="The product touches the edge."),),
        details=ReviewItemDetails(
            source=SOURCE,
            content_sha256=SHA,
            publish_name=publish_name,
            provenance=GenerationProvenance(**provenance),
        ),
    )


def packshot_item(s3, body: bytes = b"packshot jpeg bytes", photo: str = "front", image_id: str = IMAGE_ID):
    uri = generated(s3, f"prepared/{image_id}/packshot.jpg", body)
    return item(f"{image_id}-packshot", uri, f"SKU-1/{photo}.packshot.jpg", engine="backdrop")


def scene_item(s3, body: bytes = b"scene png bytes", **provenance) -> ReviewItem:
    uri = generated(s3, f"gpu/outputs/{IMAGE_ID}/lifestyle/a0/lifestyle_0.png", body, "image/png")
    provenance = {"engine": "lifestyle", "model_version": "sdxl-1.0", "seed": 7} | provenance
    return item(
        f"{IMAGE_ID}-lifestyle-a0-0", uri, "SKU-1/front.lifestyle/lifestyle_0.png", kind="lifestyle", **provenance
    )


def approve(target: ReviewItem) -> ReviewDecision:
    return ReviewDecision(item_id=target.item_id, verdict=Verdict.APPROVED, reviewer=REVIEWER, decided_at=DECIDED_AT)


def reject(target: ReviewItem, reason: str = "wrong_colour", note: str | None = "Too blue") -> ReviewDecision:
    return approve(target).model_copy(
        update={"verdict": Verdict.REJECTED, "reason": RejectionReason(reason), "note": note}
    )


def event(items: list[ReviewItem], decisions: list[ReviewDecision], brand: str = "acme") -> dict:
    """The publish task's input: `$.review` (automatic checks' output) and `$.outcome` (the review's decisions)."""
    return PublishInput(
        review=ReviewRequest(brand=brand, reviewers=(REVIEWER,), items=tuple(items)),
        outcome=ReviewOutcome(review_id=REVIEW_ID, state=ReviewState.DECIDED, decisions=tuple(decisions)),
    ).model_dump(mode="json")


def run(payload: dict) -> tuple[PublishResult, dict]:
    """The handler's answer, parsed as the workflow's PublishResult, and as raw JSON (with the computed counts)."""
    response = publish.lambda_handler(payload, FakeContext())
    return PublishResult.model_validate({k: v for k, v in response.items() if not k.endswith("_count")}), response


def versions(s3, prefix: str = "") -> list[tuple[str, str]]:
    listed = s3.list_object_versions(Bucket=OUTPUT, Prefix=prefix).get("Versions", [])
    return sorted((v["Key"], v["VersionId"]) for v in listed)


def body(s3, key: str) -> bytes:
    return s3.get_object(Bucket=OUTPUT, Key=key)["Body"].read()


def test_approved_images_are_published_under_their_names(s3):
    # Given two approved items: a JPEG packshot and a PNG lifestyle image
    packshot, scene = packshot_item(s3), scene_item(s3)

    # When publish runs with both approved
    report, response = run(event([packshot, scene], [approve(packshot), approve(scene)]))

    # Then both are in the output bucket under approved/<brand>/<publish name>, same bytes and content type
    assert report.published == (
        f"s3://{OUTPUT}/approved/acme/SKU-1/front.packshot.jpg",
        f"s3://{OUTPUT}/approved/acme/SKU-1/front.lifestyle/lifestyle_0.png",
    )
    assert response["published_count"] == 2 and response["rejected_count"] == 0 and report.conflicts == ()
    stored = s3.get_object(Bucket=OUTPUT, Key="approved/acme/SKU-1/front.packshot.jpg")
    assert stored["Body"].read() == b"packshot jpeg bytes" and stored["ContentType"] == "image/jpeg"
    scene_object = s3.get_object(Bucket=OUTPUT, Key="approved/acme/SKU-1/front.lifestyle/lifestyle_0.png")
    assert scene_object["ContentType"] == "image/png" and scene_object["Body"].read() == b"scene png bytes"
    # And no feedback is written when nothing was rejected
    assert versions(s3, "feedback/") == [] and report.feedback is None


def test_a_published_image_carries_what_made_it_as_metadata(s3):
    # Given an approved lifestyle image made with two brand adapters
    scene = scene_item(s3, adapter="acme-ss27,acme-studio", adapter_version="acme-ss27=v3,acme-studio=v1")

    # When it is published
    run(event([scene], [approve(scene)]))

    # Then the object says which job, SKU, source photo, model, adapters, seed, review and reviewer made it
    head = s3.head_object(Bucket=OUTPUT, Key="approved/acme/SKU-1/front.lifestyle/lifestyle_0.png")
    assert head["Metadata"] == {
        "job-kind": "lifestyle",
        "sku": "SKU-1",
        "source-sha256": SHA,
        "engine": "lifestyle",
        "model-version": "sdxl-1.0",
        "adapter": "acme-ss27,acme-studio",
        "adapter-version": "acme-ss27=v3,acme-studio=v1",
        "seed": "7",
        "review-id": REVIEW_ID,
        "approved-by": REVIEWER,
    }


def test_two_photos_of_one_sku_are_kept_apart(s3):
    # Given two approved packshots of the same SKU (front and back: prepare names both packshot.jpg)
    front = packshot_item(s3, b"front packshot", "front", "0123456789abcdef")
    back = packshot_item(s3, b"back packshot", "back", "fedcba9876543210")

    # When the review is published
    report, _ = run(event([front, back], [approve(front), approve(back)]))

    # Then both are published, each under its photo's name with its own bytes: neither is taken for a conflict
    assert report.conflicts == () and len(report.published) == 2
    assert body(s3, "approved/acme/SKU-1/front.packshot.jpg") == b"front packshot"
    assert body(s3, "approved/acme/SKU-1/back.packshot.jpg") == b"back packshot"


def test_an_existing_object_with_other_bytes_is_reported_and_left_alone(s3):
    # Given an image already published at the target key, with different bytes
    s3.put_object(Bucket=OUTPUT, Key="approved/acme/SKU-1/front.packshot.jpg", Body=b"what the shop shows today")
    before = versions(s3)
    packshot = packshot_item(s3, b"a new packshot")

    # When publish runs with the new image approved
    report, response = run(event([packshot], [approve(packshot)]))

    # Then it finishes, reports the conflict, and the published object is untouched (no new version)
    assert report.conflicts == (f"s3://{OUTPUT}/approved/acme/SKU-1/front.packshot.jpg",)
    assert report.published == () and response["published_count"] == 0
    assert body(s3, "approved/acme/SKU-1/front.packshot.jpg") == b"what the shop shows today"
    assert versions(s3) == before


def test_rejections_become_feedback_lines_readable_back(s3):
    # Given one approved item and two rejected ones, one generated by a GPU job with known provenance
    packshot, scene = packshot_item(s3), scene_item(s3)
    ghost_uri = generated(s3, f"gpu/outputs/{IMAGE_ID}/ghost_mannequin/a0/ghost_0.png", b"ghost", "image/png")
    ghost = item(
        f"{IMAGE_ID}-ghost-mannequin-a0-0",
        ghost_uri,
        "SKU-1/front.ghost_mannequin/ghost_0.png",
        kind="ghost_mannequin",
        engine="ghost_mannequin",
    )
    decisions = [approve(packshot), reject(scene), reject(ghost, "artefacts", None)]

    # When publish runs
    report, response = run(event([packshot, scene, ghost], decisions))

    # Then the rejected images are not published, and one JSON Lines object holds a record per rejection
    assert report.rejected == (scene.item_id, ghost.item_id) and response["rejected_count"] == 2
    assert [key for key, _ in versions(s3, "approved/")] == ["approved/acme/SKU-1/front.packshot.jpg"]
    assert report.feedback == f"s3://{OUTPUT}/feedback/acme/{REVIEW_ID}.jsonl"
    stored = s3.get_object(Bucket=OUTPUT, Key=f"feedback/acme/{REVIEW_ID}.jsonl")
    assert stored["ContentType"] == "application/x-ndjson"
    lines = stored["Body"].read().decode().splitlines()
    records = {record.item_id: record for record in map(FeedbackRecord.model_validate_json, lines)}
    assert sorted(records) == sorted([scene.item_id, ghost.item_id])
    scene_record = records[scene.item_id]
    # With the reason, the reviewer, and what made the image
    assert scene_record.verdict is Verdict.REJECTED
    assert (scene_record.reason, scene_record.note, scene_record.reviewer) == ("wrong_colour", "Too blue", REVIEWER)
    assert (scene_record.engine, scene_record.model_version, scene_record.seed) == ("lifestyle", "sdxl-1.0", 7)
    assert scene_record.generated == scene.generated and scene_record.job_kind == "lifestyle"
    assert scene_record.source == SOURCE
    assert scene_record.content_sha256 == SHA and scene_record.flags == ("touches_edge",)
    assert (scene_record.review_id, scene_record.brand, scene_record.decided_at) == (REVIEW_ID, "acme", DECIDED_AT)
    assert records[ghost.item_id].reason == "artefacts" and records[ghost.item_id].note is None


def test_the_same_input_twice_publishes_and_records_nothing_twice(s3):
    # Given a batch with one approval and one rejection, published once
    packshot, scene = packshot_item(s3), scene_item(s3)
    payload = event([packshot, scene], [approve(packshot), reject(scene)])
    first, first_response = run(payload)
    after_first = versions(s3)

    # When the task runs again with the same input (a Lambda retry)
    second, second_response = run(payload)

    # Then no object gained a version, the image counts as already published (so the workflow still ends
    # "Published"), and the feedback object still holds one line
    assert versions(s3) == after_first and len(after_first) == 2
    assert second.published == () and second.already_published == first.published
    assert second_response["published_count"] == first_response["published_count"] == 1
    assert second.conflicts == () and second.feedback == first.feedback
    assert len(body(s3, f"feedback/acme/{REVIEW_ID}.jsonl").splitlines()) == 1


def test_feedback_already_there_with_other_content_is_reported_not_replaced(s3):
    # Given a feedback object for this review that holds something else
    key = f"feedback/acme/{REVIEW_ID}.jsonl"
    s3.put_object(Bucket=OUTPUT, Key=key, Body=b'{"other": "line"}\n')
    scene = scene_item(s3)

    # When publish records a rejection for that review
    report, _ = run(event([scene], [reject(scene)]))

    # Then the existing object is kept, and the report says the feedback could not be written
    assert body(s3, key) == b'{"other": "line"}\n'
    assert report.conflicts == (f"s3://{OUTPUT}/{key}",) and report.feedback is None


def test_brand_sku_and_names_cannot_escape_the_approved_prefix(s3):
    # Given a brand, a SKU and a publish name with slashes and dot-dot segments, When the item is approved
    uri = generated(s3, f"prepared/{IMAGE_ID}/packshot.jpg", b"packshot")
    sneaky = item("../x", uri, "../../SKU 1/../../x.jpg", sku="SKU 1/../..")
    report, _ = run(event([sneaky], [approve(sneaky)], brand="a/../b"))

    # Then the object lands under approved/<brand>/ with no ".." segment anywhere
    (published,) = report.published
    parts = published.removeprefix(f"s3://{OUTPUT}/").split("/")
    assert parts[0] == "approved" and ".." not in parts and parts[-1].endswith(".jpg")
    assert [key for key, _ in versions(s3)] == [published.removeprefix(f"s3://{OUTPUT}/")]


def test_a_decision_for_an_unknown_item_fails_the_task(s3):
    # Given a decision for an item the review did not ask about, When publish runs, Then it fails, publishing nothing
    packshot = packshot_item(s3)
    stranger = approve(packshot).model_copy(update={"item_id": "img9"})
    with pytest.raises(ValueError, match="img9"):
        run(event([packshot], [stranger]))
    assert versions(s3) == []


def test_adapter_versions_travel_from_the_gpu_result_to_the_feedback_and_the_published_metadata(s3):
    # Given a prepared photo and a lifestyle job whose JobResult names the adapters it ran with
    prefix = f"s3://{WORK}/prepared/{IMAGE_ID}/"
    prepared = PreparedImage(
        image_id=IMAGE_ID,
        brand=ResolvedBrand(brand="acme", adapters={"acme-ss27": "v3", "acme-studio": "v1"}),
        sku="SKU-1",
        source=SOURCE,
        filename="front.jpg",
        publish_stem="SKU-1/front",
        content_sha256=SHA,
        intake=IntakeInfo(detected_format="JPEG", width=40, height=40, mode="RGB"),
        cutout=Cutout(engine="backdrop", confidence=0.9, low_confidence=False, coverage=0.4),
        files=PreparedFiles(cutout=f"{prefix}cutout.png", mask=f"{prefix}mask.png", packshot=f"{prefix}packshot.jpg"),
        reviewers=(REVIEWER,),
    )
    generated(s3, f"prepared/{IMAGE_ID}/packshot.jpg", b"packshot")
    outputs = []
    for n in (0, 1):
        scene = io.BytesIO()
        Image.new("RGB", (40, 40), (10 * n, 90, 160)).save(scene, "PNG")
        uri = generated(s3, f"gpu/outputs/{IMAGE_ID}/lifestyle/a0/lifestyle_{n}.png", scene.getvalue(), "image/png")
        outputs.append(JobOutput(uri=uri, seed=100 + n, details={"mode": "img2img"}))
    result = JobResult(
        job_id=f"{IMAGE_ID}-lifestyle-a0",
        kind=JobKind.LIFESTYLE,
        status=Status.SUCCEEDED,
        outputs=tuple(outputs),
        model_version="sdxl-base-1.0",
        adapter_versions={"acme-studio": "v1", "acme-ss27": "v3"},
    )

    # When the checks run on the GPU task's output, and the reviewer approves one variation and rejects the other
    checks_input = ChecksInput(prepared=prepared, gpu_results=(result,)).model_dump(mode="json")
    checks_input["gpu_results"] = [job_outcomes.task_output(result)]  # what the Map collected
    review = ReviewRequest.model_validate(automatic_checks.lambda_handler(checks_input, FakeContext()))
    by_id = {entry.item_id: entry for entry in review.items}
    kept, dropped = by_id[f"{IMAGE_ID}-lifestyle-a0-0"], by_id[f"{IMAGE_ID}-lifestyle-a0-1"]
    report, _ = run(event(list(review.items), [approve(kept), reject(dropped, "off_brand", None)]))

    # Then the published image's metadata names both adapters with their versions, and its seed
    (published,) = report.published
    assert published == f"s3://{OUTPUT}/approved/acme/SKU-1/front.lifestyle/lifestyle_0.png"
    metadata = s3.head_object(Bucket=OUTPUT, Key=published.removeprefix(f"s3://{OUTPUT}/"))["Metadata"]
    assert metadata["adapter"] == "acme-ss27,acme-studio"
    assert metadata["adapter-version"] == "acme-ss27=v3,acme-studio=v1"
    assert (metadata["model-version"], metadata["seed"]) == ("sdxl-base-1.0", "100")
    # And the rejected variation's feedback record says the same, so the next training round knows which LoRA failed
    (line,) = body(s3, f"feedback/acme/{REVIEW_ID}.jsonl").decode().splitlines()
    record = FeedbackRecord.model_validate_json(line)
    assert (record.item_id, record.reason) == (dropped.item_id, RejectionReason.OFF_BRAND)
    assert (record.adapter, record.adapter_version) == ("acme-ss27,acme-studio", "acme-ss27=v3,acme-studio=v1")
    assert (record.model_version, record.seed, record.engine) == ("sdxl-base-1.0", 101, "lifestyle")
