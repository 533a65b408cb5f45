"""The publish stage with a recording publisher, and the folder publisher `catalog run` uses: approved images are
published under their names with their provenance and never over other bytes; rejections become one feedback
write per review; a re-run adds nothing."""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from functions.adapters.local.publisher import FolderPublisher
from functions.ports import PublishStatus
from functions.stages.publish import publish_decisions, publish_name, published_metadata
from schemas import (
    FeedbackRecord,
    GenerationProvenance,
    QualityFlag,
    RejectionReason,
    ReviewDecision,
    ReviewItem,
    ReviewItemDetails,
    Verdict,
)

REVIEW_ID = "rev-0123456789abcdef"
REVIEWER = "buyer@acme.example"
SHA = "ab" * 32
DECIDED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class RecordingPublisher:
    """The publisher port in memory: never overwrites, says whether the bytes were the same, records every call."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        self.feedback: dict[str, bytes] = {}
        self.feedback_calls: list[tuple[str, str, bytes]] = []

    def _put(self, store: dict, key: str, value, data: bytes) -> PublishStatus:
        if key not in store:
            store[key] = value
            return PublishStatus.PUBLISHED
        existing = store[key][0] if isinstance(store[key], tuple) else store[key]
        return PublishStatus.ALREADY_PUBLISHED if existing == data else PublishStatus.CONFLICT

    def publish(
        self, brand: str, name: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> tuple[PublishStatus, str]:
        key = f"approved/{brand}/{name}"
        return self._put(self.objects, key, (data, content_type, dict(metadata)), data), key

    def record_feedback(self, brand: str, review_id: str, lines: bytes) -> tuple[PublishStatus, str]:
        self.feedback_calls.append((brand, review_id, lines))
        key = f"feedback/{brand}/{review_id}.jsonl"
        return self._put(self.feedback, key, lines, lines), key


FILES = {
    "s3://work/prepared/img1/packshot.jpg": b"packshot",
    "s3://work/gpu/outputs/img1/lifestyle/a0/lifestyle_0.png": b"scene",
    "s3://work/gpu/outputs/img1/try_on/a0/try_on_0.png": b"try-on",
}


def item(item_id: str, generated: str, name: str | None, kind: str = "packshot", **provenance) -> ReviewItem:
    return ReviewItem(
        item_id=item_id,
        sku="SKU-1",
        original="s3://work/prepared/img1/preview.original.jpg",
        generated=generated,
        job_kind=kind,
        flags=(QualityFlag(code="touches_edge", message="The product touches the edge."),),
        details=ReviewItemDetails(
            source="s3://intake/incoming/acme/SKU-1/front.jpg",
            content_sha256=SHA,
            publish_name=name,
            provenance=GenerationProvenance(**provenance),
        ),
    )


PACKSHOT = item("img1-packshot", "s3://work/prepared/img1/packshot.jpg", "SKU-1/front.packshot.jpg", engine="backdrop")
SCENE = item(
    "img1-lifestyle-a0-0",
    "s3://work/gpu/outputs/img1/lifestyle/a0/lifestyle_0.png",
    "SKU-1/front.lifestyle/lifestyle_0.png",
    kind="lifestyle",
    engine="lifestyle",
    model_version="sdxl-1.0",
    adapter="acme-ss27",
    adapter_version="acme-ss27=v3",
    seed=7,
)
TRY_ON = item(
    "img1-try-on-a0-0",
    "s3://work/gpu/outputs/img1/try_on/a0/try_on_0.png",
    "SKU-1/front.try_on/try_on_0.png",
    kind="try_on",
    engine="try_on",
    seed=5,
)
ITEMS = (PACKSHOT, SCENE, TRY_ON)


def approve(target: ReviewItem, reviewer: str = REVIEWER) -> ReviewDecision:
    return ReviewDecision(item_id=target.item_id, verdict=Verdict.APPROVED, reviewer=reviewer, decided_at=DECIDED_AT)


def reject(target: ReviewItem, reason: RejectionReason = RejectionReason.WRONG_COLOUR) -> ReviewDecision:
    return ReviewDecision(
        item_id=target.item_id,
        verdict=Verdict.REJECTED,
        reason=reason,
        note="Too blue",
        reviewer=REVIEWER,
        decided_at=DECIDED_AT,
    )


def publish(publisher, decisions, items=ITEMS, files=FILES, brand: str = "acme"):
    return publish_decisions(brand, REVIEW_ID, items, decisions, read_bytes=files.__getitem__, publisher=publisher)


def test_approved_images_are_published_under_their_names_with_their_content_type():
    # Given a packshot and a lifestyle image approved, and a try-on rejected
    publisher = RecordingPublisher()

    # When the decisions are published
    result = publish(publisher, [approve(PACKSHOT), approve(SCENE), reject(TRY_ON)])

    # Then the approved images are at their published names, with their bytes and content types
    assert result.published == (
        "approved/acme/SKU-1/front.packshot.jpg",
        "approved/acme/SKU-1/front.lifestyle/lifestyle_0.png",
    )
    assert publisher.objects["approved/acme/SKU-1/front.packshot.jpg"][:2] == (b"packshot", "image/jpeg")
    assert publisher.objects["approved/acme/SKU-1/front.lifestyle/lifestyle_0.png"][:2] == (b"scene", "image/png")
    # And the rejected one is not published but counted
    assert len(publisher.objects) == 2
    assert result.rejected == (TRY_ON.item_id,) and result.published_count == 2 and result.rejected_count == 1


def test_the_published_image_carries_its_provenance():
    # Given an approved lifestyle image made with a brand adapter
    publisher = RecordingPublisher()

    # When it is published
    publish(publisher, [approve(SCENE)])

    # Then it carries what made it, which review and who approved it
    (_, _, metadata) = publisher.objects["approved/acme/SKU-1/front.lifestyle/lifestyle_0.png"]
    assert metadata == {
        "job-kind": "lifestyle",
        "sku": "SKU-1",
        "source-sha256": SHA,
        "engine": "lifestyle",
        "model-version": "sdxl-1.0",
        "adapter": "acme-ss27",
        "adapter-version": "acme-ss27=v3",
        "seed": "7",
        "review-id": REVIEW_ID,
        "approved-by": REVIEWER,
    }


def test_unknown_provenance_is_left_out_rather_than_written_as_none():
    # Given a packshot, which has no model, adapter or seed, When its metadata is made
    metadata = published_metadata(PACKSHOT, approve(PACKSHOT), REVIEW_ID)
    # Then only what is known is there
    assert set(metadata) == {"job-kind", "sku", "source-sha256", "engine", "review-id", "approved-by"}
    assert "None" not in metadata.values()


def test_metadata_is_ascii_even_when_names_are_not():
    # Given an image whose SKU, adapter and reviewer have non-ASCII characters
    fancy = item("x1", "s3://work/x.png", "SKU-é/x.png", kind="lifestyle", adapter="été-capsule", adapter_version="v2")
    fancy = fancy.model_copy(update={"sku": "SKU-é"})

    # When its metadata is made (S3 user metadata must be ASCII)
    metadata = published_metadata(fancy, approve(fancy, reviewer="zoë@acme.example"), REVIEW_ID)

    # Then every value is ASCII, the non-ASCII characters replaced, the rest kept
    assert all(value.isascii() for value in metadata.values())
    assert (
        metadata["sku"] == "SKU-?"
        and metadata["adapter"] == "?t?-capsule"
        and metadata["approved-by"].endswith("@acme.example")
    )


def test_an_existing_image_with_other_bytes_is_a_conflict_left_alone():
    # Given other bytes already published under the packshot's name
    publisher = RecordingPublisher()
    publisher.objects["approved/acme/SKU-1/front.packshot.jpg"] = (b"what the shop shows", "image/jpeg", {})

    # When the packshot is approved and published
    result = publish(publisher, [approve(PACKSHOT)])

    # Then it is reported as a conflict, not published, and the existing bytes are kept
    assert result.conflicts == ("approved/acme/SKU-1/front.packshot.jpg",)
    assert result.published == () and result.published_count == 0
    assert publisher.objects["approved/acme/SKU-1/front.packshot.jpg"][0] == b"what the shop shows"


def test_a_rerun_publishes_nothing_twice_and_still_counts_as_published():
    # Given decisions published once
    publisher = RecordingPublisher()
    decisions = [approve(PACKSHOT), reject(SCENE), reject(TRY_ON)]
    first = publish(publisher, decisions)

    # When the same decisions are published again (a retried task)
    second = publish(publisher, decisions)

    # Then the image is already there (so the workflow still ends "Published") and the feedback too
    assert second.published == () and second.already_published == first.published
    assert second.published_count == first.published_count == 1
    assert second.feedback == first.feedback and second.conflicts == ()
    assert len(publisher.feedback) == 1


def test_rejections_are_one_feedback_write_per_review_with_every_rejection():
    # Given two rejections in one review
    publisher = RecordingPublisher()

    # When the decisions are published
    result = publish(publisher, [approve(PACKSHOT), reject(SCENE), reject(TRY_ON, RejectionReason.ARTEFACTS)])

    # Then the feedback is written once, for the brand and the review, one JSON line per rejection
    ((brand, review_id, lines),) = publisher.feedback_calls
    assert (brand, review_id) == ("acme", REVIEW_ID)
    records = [FeedbackRecord.model_validate_json(line) for line in lines.decode().splitlines()]
    assert [record.item_id for record in records] == [SCENE.item_id, TRY_ON.item_id]
    assert result.feedback == f"feedback/acme/{REVIEW_ID}.jsonl"
    # And each line says why, who decided, and what made the image
    scene = records[0]
    assert (scene.reason, scene.note, scene.reviewer) == (RejectionReason.WRONG_COLOUR, "Too blue", REVIEWER)
    assert (scene.adapter, scene.adapter_version, scene.seed) == ("acme-ss27", "acme-ss27=v3", 7)
    assert scene.flags == ("touches_edge",) and scene.content_sha256 == SHA and scene.generated == SCENE.generated


def test_nothing_rejected_writes_no_feedback():
    # Given only approvals, When they are published, Then the feedback dataset is not touched
    publisher = RecordingPublisher()
    result = publish(publisher, [approve(PACKSHOT)])
    assert publisher.feedback_calls == [] and result.feedback is None and result.rejected == ()


def test_feedback_that_is_already_there_with_other_lines_is_a_conflict():
    # Given other lines already stored as this review's feedback
    publisher = RecordingPublisher()
    publisher.feedback[f"feedback/acme/{REVIEW_ID}.jsonl"] = b'{"other": "line"}\n'

    # When a rejection is published, Then the stored lines are kept and the conflict is reported
    result = publish(publisher, [reject(SCENE)])
    assert result.conflicts == (f"feedback/acme/{REVIEW_ID}.jsonl",) and result.feedback is None
    assert publisher.feedback[f"feedback/acme/{REVIEW_ID}.jsonl"] == b'{"other": "line"}\n'


def test_undecided_items_are_neither_published_nor_recorded():
    # Given a review that ended with one item decided (the others timed out), When it is published
    publisher = RecordingPublisher()
    result = publish(publisher, [approve(SCENE)])
    # Then only the decided item is published and nothing becomes feedback
    assert list(publisher.objects) == ["approved/acme/SKU-1/front.lifestyle/lifestyle_0.png"]
    assert result.rejected == () and publisher.feedback_calls == []


def test_a_decision_for_an_item_not_in_the_review_publishes_nothing():
    # Given an approval for an item the review did not ask about, besides a valid one
    publisher = RecordingPublisher()
    stranger = approve(PACKSHOT).model_copy(update={"item_id": "img9"})

    # When the decisions are published, Then it fails naming the item, before anything is published
    with pytest.raises(ValueError, match="img9"):
        publish(publisher, [approve(PACKSHOT), stranger])
    assert publisher.objects == {} and publisher.feedback_calls == []


def test_an_item_without_a_publish_name_is_named_after_its_sku_and_id():
    # Given an item from an older run, without a publish name
    old = item("img1-packshot", "s3://work/prepared/img1/packshot.jpg", None)
    # Then it is published as <sku>/<item id><extension of the generated file>
    assert publish_name(old) == "SKU-1/img1-packshot.jpg"


@pytest.mark.parametrize(
    "name", ["../../etc/passwd.jpg", "SKU 1/../../x.jpg", "/abs/x.jpg", "SKU-1/./x.jpg", "SKU-1//x.jpg"]
)
def test_a_publish_name_never_climbs_out_of_the_brands_folder(name):
    # Given a publish name with dot-dot, absolute or odd segments, When it is made safe
    safe = publish_name(item("x1", "s3://work/x.jpg", name))
    # Then no segment can leave the folder, and the file is still a .jpg
    parts = safe.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts and not safe.startswith("/")
    assert safe.endswith(".jpg")


# ---- the folder publisher (`catalog run`) ---------------------------------------------------------------------------


def test_the_folder_publisher_puts_an_image_once_and_logs_its_provenance(tmp_path):
    # Given an output folder
    publisher = FolderPublisher(tmp_path)
    metadata = {"seed": "7", "adapter-version": "acme-ss27=v3"}

    # When an image is published, then the same bytes again, then other bytes under the same name
    first = publisher.publish("acme", "SKU-1/front.packshot.jpg", b"packshot", "image/jpeg", metadata)
    again = publisher.publish("acme", "SKU-1/front.packshot.jpg", b"packshot", "image/jpeg", metadata)
    other = publisher.publish("acme", "SKU-1/front.packshot.jpg", b"another", "image/jpeg", metadata)

    # Then it is published once, the re-run is recognised, the other bytes are a conflict, and the file is the first
    assert first == (PublishStatus.PUBLISHED, "approved/SKU-1/front.packshot.jpg")
    assert again == (PublishStatus.ALREADY_PUBLISHED, "approved/SKU-1/front.packshot.jpg")
    assert other == (PublishStatus.CONFLICT, "approved/SKU-1/front.packshot.jpg")
    assert (tmp_path / "approved" / "SKU-1" / "front.packshot.jpg").read_bytes() == b"packshot"
    # And published.jsonl has one line for it, with its provenance (what S3 keeps as metadata)
    (line,) = (tmp_path / "published.jsonl").read_text().splitlines()
    assert json.loads(line) == {
        "path": "approved/SKU-1/front.packshot.jpg",
        "content_type": "image/jpeg",
        "metadata": {"adapter-version": "acme-ss27=v3", "seed": "7"},
    }
    # And no temporary file is left beside it
    assert sorted(p.name for p in (tmp_path / "approved" / "SKU-1").iterdir()) == ["front.packshot.jpg"]


def test_the_folder_publisher_refuses_names_outside_its_folder(tmp_path):
    # Given a name that climbs out of OUT, When it is published, Then it is refused and nothing is written outside
    out = tmp_path / "out"
    publisher = FolderPublisher(out)
    with pytest.raises(ValueError, match="outside"):
        publisher.publish("acme", "../../escaped.jpg", b"x", "image/jpeg", {})
    assert not (tmp_path / "escaped.jpg").exists()


def test_the_folder_publisher_records_each_reviews_feedback_once(tmp_path):
    # Given two reviews' rejections for one brand
    publisher = FolderPublisher(tmp_path)
    first_lines, second_lines = b'{"review_id": "r1"}\n', b'{"review_id": "r2"}\n'

    # When both are recorded, and the first again (a re-run of its publish)
    first = publisher.record_feedback("acme", "r1", first_lines)
    second = publisher.record_feedback("acme", "r2", second_lines)
    again = publisher.record_feedback("acme", "r1", first_lines)

    # Then the brand's feedback file holds each review's lines once
    assert first == second == (PublishStatus.PUBLISHED, "feedback/acme.jsonl")
    assert again == (PublishStatus.ALREADY_PUBLISHED, "feedback/acme.jsonl")
    assert (tmp_path / "feedback" / "acme.jsonl").read_bytes() == first_lines + second_lines


def test_the_stage_and_the_folder_publisher_together(tmp_path):
    # Given approved and rejected items, and OUT as the place to publish
    publisher = FolderPublisher(tmp_path)
    decisions = [approve(PACKSHOT), approve(SCENE), reject(TRY_ON)]

    # When the decisions are published twice (the local flow after a review, then a re-run)
    first = publish(publisher, decisions)
    second = publish(publisher, decisions)

    # Then the images are under OUT/approved/ once, and the rejection is one feedback line
    approved = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "approved").rglob("*") if p.is_file())
    assert approved == ["approved/SKU-1/front.lifestyle/lifestyle_0.png", "approved/SKU-1/front.packshot.jpg"]
    assert first.published_count == second.published_count == 2 and second.published == ()
    (line,) = (tmp_path / "feedback" / "acme.jsonl").read_text().splitlines()
    assert FeedbackRecord.model_validate_json(line).item_id == TRY_ON.item_id
    assert len((tmp_path / "published.jsonl").read_text().splitlines()) == 2


def test_a_folder_publisher_under_a_symlinked_output_folder_still_works(tmp_path):
    # Given OUT reached through a symlink, When an image is published, Then it lands in the real folder
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    status, _ = FolderPublisher(Path(tmp_path / "alias")).publish("acme", "SKU-1/x.jpg", b"x", "image/jpeg", {})
    assert status is PublishStatus.PUBLISHED and (real / "approved" / "SKU-1" / "x.jpg").read_bytes() == b"x"
