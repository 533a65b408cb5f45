"""The dataset check's gates one by one, on rendered studio photos whose faults are known: blur, exposure, size,
coverage, duplicates; then buckets, captions, the user's caption edits, the feedback log and the report's escaping."""

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageFilter

from functions.errors import ConfigurationError
from functions.local.synthetic_photos import render_product_photo
from functions.stages.background.keyer import BackdropKeyer
from functions.stages.dataset import (
    CandidatePhoto,
    DatasetGates,
    DatasetRefusedError,
    PreviousDataset,
    assess_photo,
    check_caption_template,
    mark_duplicates,
    plan_bucket,
    render_caption,
)
from functions.stages.dataset_report import render_report
from functions.stages.feedback import approved_generated, by_reason, parse_feedback
from schemas import FeedbackRecord, ProductSidecar, RejectionReason, Verdict
from schemas.dataset import DatasetManifest, DatasetPhoto, FailureCase, PhotoVerdict

GATES = DatasetGates(min_side=192, bucket_resolution=256)
KEYER = BackdropKeyer()


@pytest.fixture(scope="module")
def studio_photo() -> Image.Image:
    return render_product_photo("dress", (118, 140, 112), (242, 222, 222), size=(240, 320), seed=4).image


def _assess(tmp_path: Path, image: Image.Image, name: str = "photo.jpg", gates: DatasetGates = GATES):
    path = tmp_path / name
    image.save(path, "JPEG", quality=92)
    return assess_photo(CandidatePhoto(path, name, "SKU-1"), "photo", gates, KEYER, gates_limits())


def gates_limits():
    from functions.stages.intake import IntakeLimits

    return IntakeLimits()


def _codes(photo) -> list[str]:
    return [finding.code for finding in photo.findings]


def test_a_sharp_well_exposed_studio_photo_passes_every_gate(tmp_path, studio_photo):
    # Given a sharp studio photo of a whole dress, larger than the minimum
    # When it is assessed
    photo = _assess(tmp_path, studio_photo)
    # Then nothing is found against it and it has a product mask
    assert photo.findings == [] and photo.mask is not None and not photo.refused


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (lambda image: image.filter(ImageFilter.GaussianBlur(3)), "blurry"),
        (lambda image: ImageEnhance.Brightness(image).enhance(0.25), "too_dark"),
        (lambda image: ImageEnhance.Brightness(image).enhance(2.2), "too_light"),
        (lambda image: image.resize((150, 200)), "too_small"),
        (lambda image: image.crop((0, 100, 240, 240)), "product_cut_by_frame"),
    ],
    ids=["blur", "dark", "light", "small", "cut"],
)
def test_each_fault_refuses_the_photo_with_its_own_reason_naming_the_file(tmp_path, studio_photo, fault, code):
    # Given the studio photo with one fault
    # When it is assessed
    photo = _assess(tmp_path, fault(studio_photo), name="faulty.jpg")
    # Then it is refused for that reason, and the reason names the file
    assert code in _codes(photo) and photo.refused
    finding = next(f for f in photo.findings if f.code == code)
    assert "faulty.jpg" in finding.message


def test_upscaling_never_counts_towards_the_minimum_size(tmp_path, studio_photo):
    # Given a small photo blown up past the minimum side (its pixels are no more detailed)
    small = studio_photo.resize((120, 160))
    # When it is assessed as it is, it is too small; and the check itself never enlarges what it keeps
    assert "too_small" in _codes(_assess(tmp_path, small))
    assert plan_bucket(120, 160, 1024)[0] <= 120 and plan_bucket(120, 160, 1024)[1] <= 160


def test_a_tiny_product_in_a_big_frame_is_too_small_and_an_empty_frame_has_no_product(tmp_path):
    # Given a garment filling a small corner of the frame, and a frame with only the backdrop
    garment = render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), size=(64, 64), seed=1).image
    frame = Image.new("RGB", (320, 320), (246, 246, 244))
    frame.paste(garment.crop((8, 8, 56, 56)), (130, 130))
    # Then the first is refused as too small a product, the second as showing no product
    assert "product_too_small" in _codes(_assess(tmp_path, frame, "corner.jpg"))
    empty = _assess(tmp_path, Image.new("RGB", (320, 320), (246, 246, 244)), "empty.jpg")
    assert _codes(empty) == ["no_product"] and "empty.jpg" in empty.findings[0].message


def test_corrupt_bytes_are_refused_by_the_same_intake_as_catalog_run(tmp_path):
    # Given a JPEG cut in half
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    render_product_photo("tshirt", (196, 28, 36), (246, 246, 244), size=(240, 320)).image.save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    # When it is assessed
    photo = assess_photo(CandidatePhoto(path, "cut.jpg", "S"), "cut", GATES, KEYER, gates_limits())
    # Then intake's own code and sentence refuse it
    assert _codes(photo) == ["truncated_image"] and "cut.jpg" in photo.findings[0].message


def test_exact_and_near_duplicates_are_grouped_and_the_larger_photo_is_kept(tmp_path, studio_photo):
    # Given a photo, its exact copy, a smaller re-save of it, a different garment, and the same dress in another
    # colour (the same shape: its pHash, computed on grey, is within the threshold, yet it is another product)
    other = render_product_photo("trousers", (34, 42, 72), (218, 218, 216), size=(240, 320), seed=2).image
    recoloured = render_product_photo("dress", (160, 40, 90), (242, 222, 222), size=(240, 320), seed=4).image
    photos = [
        _assess(tmp_path, studio_photo, "a.jpg"),
        _assess(tmp_path, studio_photo, "b.jpg"),
        _assess(tmp_path, studio_photo.resize((200, 266)), "c.jpg"),
        _assess(tmp_path, other, "d.jpg"),
        _assess(tmp_path, recoloured, "e.jpg"),
    ]
    assert photos[0].phash is not None and photos[4].phash is not None
    assert photos[0].phash - photos[4].phash <= 6
    # When duplicates are marked
    groups = mark_duplicates(photos, max_distance=6)
    # Then the three copies form one group; the first full-size one is kept, the others say which one is kept
    assert len(groups) == 1 and {p.candidate.source for p in groups[0]} == {"a.jpg", "b.jpg", "c.jpg"}
    assert not photos[0].refused and photos[3].duplicate_group is None and photos[4].duplicate_group is None
    assert _codes(photos[1]) == ["exact_duplicate"] and "a.jpg" in photos[1].findings[0].message
    assert _codes(photos[2]) == ["near_duplicate"]


@pytest.mark.parametrize(("size", "expected"), [((2000, 2000), (1024, 1024)), ((1200, 1600), (896, 1152))])
def test_buckets_follow_the_photo_aspect_in_multiples_of_64(size, expected):
    assert plan_bucket(size[0], size[1], resolution=1024) == expected


def test_a_bucket_never_asks_for_more_pixels_than_the_photo_has():
    for width, height in [(700, 1100), (1030, 1030), (500, 1400), (1600, 900)]:
        bucket_w, bucket_h = plan_bucket(width, height, 1024)
        assert bucket_w <= width and bucket_h <= height and bucket_w % 64 == 0 and bucket_h % 64 == 0


def test_captions_come_from_the_sidecar_and_drop_what_is_missing():
    sidecar = ProductSidecar(title="Slip dress", category="dresses", colour="sage green", collection="SS27")
    template = "{trigger_token}, {title}, {colour} {category}, {collection} collection"
    assert render_caption(template, "D-4", sidecar, "sks") == "sks, Slip dress, sage green dresses, SS27 collection"
    # Without a collection, a trigger token or a category, those parts go rather than leaving ", collection"
    bare = ProductSidecar(title="Crew-neck T-shirt")
    assert render_caption(template, "T-1", bare, None) == "Crew-neck T-shirt"
    assert render_caption("{sku} photo", "T-1", None, None) == "T-1 photo"


def test_a_caption_template_with_an_unknown_field_is_refused_naming_the_fields():
    with pytest.raises(ConfigurationError, match=r"price.*the fields are trigger_token"):
        check_caption_template("{trigger_token} {price}")


def _manifest_with(photo: DatasetPhoto) -> DatasetManifest:
    return DatasetManifest(brand="acme", created_at=datetime.now(UTC), min_side=1024, photos=(photo,))


def test_the_users_caption_edit_is_recognised_and_stays_recognised(tmp_path):
    # Given a dataset whose caption file we wrote as "sks, dress"
    (tmp_path / "images").mkdir()
    caption_file = tmp_path / "images" / "d.txt"
    photo = DatasetPhoto(
        id="d", source="d.jpg", verdict=PhotoVerdict.KEPT, caption_file="images/d.txt", caption="sks, dress"
    )
    (tmp_path / "dataset.json").write_text(_manifest_with(photo).model_dump_json())
    caption_file.write_text("sks, dress\n")
    # Then an untouched file is not an edit
    assert PreviousDataset.read(tmp_path).edited_caption("d") is None
    # When the user edits it, the edit is returned
    caption_file.write_text("sks, a sage slip dress in silk\n", encoding="utf-8")
    assert PreviousDataset.read(tmp_path).edited_caption("d") == "sks, a sage slip dress in silk"
    # And once recorded as edited, it stays the user's even though it now matches the record
    recorded = photo.model_copy(update={"caption": "sks, a sage slip dress in silk", "caption_edited": True})
    (tmp_path / "dataset.json").write_text(_manifest_with(recorded).model_dump_json())
    assert PreviousDataset.read(tmp_path).edited_caption("d") == "sks, a sage slip dress in silk"
    # And a file in another encoding stops the check, naming the file
    caption_file.write_bytes("sks, robe en soie écrue".encode("latin-1"))
    with pytest.raises(DatasetRefusedError, match=r"d\.txt is not UTF-8"):
        PreviousDataset.read(tmp_path).edited_caption("d")


def _feedback(
    item_id: str, verdict: Verdict, reason: RejectionReason | None, brand: str = "acme", prompt: str | None = None
) -> str:
    record = FeedbackRecord(
        review_id="r" * 16,
        item_id=item_id,
        brand=brand,
        sku="DRESS-1",
        job_kind="lifestyle",
        source="DRESS-1/front.jpg",
        content_sha256=None,
        generated=f"out/{item_id}.png",
        verdict=verdict,
        reason=reason,
        note="too orange",
        reviewer="merch@example.com",
        decided_at=datetime(2026, 11, 30, tzinfo=UTC),
        seed=7,
        adapter="acme-style",
        adapter_version="v3",
        prompt=prompt,
    ).model_dump(mode="json")
    if prompt is None:
        del record["prompt"]  # as lines written before prompts were recorded
    return json.dumps(record)


def test_rejections_become_failure_cases_grouped_by_reason_and_bad_lines_are_named(tmp_path):
    # Given a feedback file with two colour rejections, an artefact, another brand's line, and a broken line
    lines = [
        _feedback("i1", Verdict.REJECTED, RejectionReason.WRONG_COLOUR),
        _feedback("i2", Verdict.REJECTED, RejectionReason.ARTEFACTS),
        _feedback("i3", Verdict.REJECTED, RejectionReason.WRONG_COLOUR, prompt="sks dress on a terrace"),
        _feedback("i4", Verdict.REJECTED, RejectionReason.OFF_BRAND, brand="other"),
        '{"review_id": "x"}',
    ]
    # When it is read for acme
    read = parse_feedback("\n".join(lines).encode(), "feedback/acme.jsonl", "acme")
    # Then the failure log groups acme's rejections by reason, each with its seed and adapter version
    groups = by_reason(read.cases)
    assert [(reason, [c.item_id for c in cases]) for reason, cases in groups.items()] == [
        (RejectionReason.WRONG_COLOUR, ["i1", "i3"]),
        (RejectionReason.ARTEFACTS, ["i2"]),
    ]
    assert groups[RejectionReason.WRONG_COLOUR][0].seed == 7
    assert groups[RejectionReason.WRONG_COLOUR][0].adapter_version == "v3"
    # And the prompt when the line has one (older lines, written before prompts were recorded, have none)
    assert [c.prompt for c in groups[RejectionReason.WRONG_COLOUR]] == [None, "sks dress on a terrace"]
    # And the broken line is reported by file and line number
    assert len(read.problems) == 1 and "feedback/acme.jsonl line 5" in read.problems[0]


def test_only_approved_generated_images_are_offered_for_the_next_dataset(tmp_path):
    # Given a run's output with a published packshot and a published lifestyle image
    from functions.adapters.local.publisher import FolderPublisher

    publisher = FolderPublisher(tmp_path)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(png, "PNG")
    publisher.publish("acme", "DRESS-1/front.packshot.png", png.getvalue(), "image/png", {"job-kind": "packshot"})
    publisher.publish(
        "acme", "DRESS-1/front.lifestyle.png", png.getvalue(), "image/png", {"job-kind": "lifestyle", "sku": "DRESS-1"}
    )
    # When the approved images are listed
    found, problems = approved_generated(tmp_path)
    # Then only the generated one is a candidate
    assert [(a.sku, a.job_kind, a.path.name) for a in found] == [("DRESS-1", "lifestyle", "front.lifestyle.png")]
    assert problems == []


def test_the_report_escapes_what_users_typed(tmp_path):
    # Given a photo named with markup and a rejection note with a script
    photo = DatasetPhoto(id="x", source="<b>x</b>.jpg", verdict=PhotoVerdict.REFUSED)
    case = FailureCase(
        reason=RejectionReason.OFF_BRAND,
        review_id="r",
        item_id="i",
        sku="S",
        job_kind="lifestyle",
        generated="g.png",
        note="<script>alert(1)</script>",
    )
    manifest = _manifest_with(photo).model_copy(update={"failure_cases": (case,)})
    # When the report is rendered
    page = render_report(manifest, tmp_path)
    # Then the text shows, the markup does not run
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;.jpg" in page
    assert 'id="failure-off_brand"' in page
    json.dumps(page)  # plain text, nothing binary


@pytest.mark.parametrize("sample", ["09133_00.jpg", "04469_00.jpg"], ids=["white-on-white", "print"])
def test_real_studio_photos_pass_the_blur_gate_until_they_are_blurred(samples_dir, tmp_path, sample):
    # Given a real studio photo (a pale, low-contrast one among them) and the same photo with a 2.5 px blur
    original = Image.open(samples_dir / sample).convert("RGB")
    gates = DatasetGates(min_side=768)
    # Then the sharp one is not called blurry and the blurred one is
    assert "blurry" not in _codes(_assess(tmp_path, original, "sharp.jpg", gates))
    blurred = _assess(tmp_path, original.filter(ImageFilter.GaussianBlur(2.5)), "soft.jpg", gates)
    assert "blurry" in _codes(blurred)


def test_feedback_is_read_from_s3_through_the_storage_port(monkeypatch):
    # Given acme's feedback file in the output bucket, as the AWS publisher writes it
    moto = pytest.importorskip("moto")
    import boto3

    from functions.adapters.aws.s3_storage import S3Storage
    from functions.stages.feedback import read_feedback

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="out")
        line = _feedback("i1", Verdict.REJECTED, RejectionReason.PRODUCT_ALTERED)
        s3.put_object(Bucket="out", Key="feedback/acme.jsonl", Body=(line + "\n").encode())
        # When it is read with a second, missing file
        read = read_feedback(S3Storage(s3), ["s3://out/feedback/acme.jsonl", "s3://out/feedback/none.jsonl"], "acme")
    # Then the rejection is a failure case, and the missing file is a note, not a crash
    assert [(c.item_id, c.reason) for c in read.cases] == [("i1", RejectionReason.PRODUCT_ALTERED)]
    assert len(read.problems) == 1 and "none.jsonl" in read.problems[0]
