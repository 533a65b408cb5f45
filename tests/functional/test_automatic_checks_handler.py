"""`automatic_checks` against moto: every prepared and generated image becomes a review item; prepare's flags pass
through on the packshot, each GPU output's flags come from the files it wrote in the work bucket, and what made
each image (model, adapters and versions, seed) travels with it. The invariants themselves are tested on the
stage (tests/unit/test_checks_stage.py); these tests prove the wiring."""

import io

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

from functions.adapters.aws import job_outcomes, settings
from functions.handlers import automatic_checks
from schemas import (
    ChecksInput,
    Cutout,
    IntakeInfo,
    JobKind,
    JobOutput,
    JobResult,
    PreparedFiles,
    PreparedImage,
    QualityFlag,
    ResolvedBrand,
    ReviewItem,
    ReviewRequest,
    Severity,
    Status,
)

from .aws_fixtures import REGION, WORK, FakeContext, create_resources

IMAGE_ID = "0123456789abcdef"
SHA = "cd" * 32
SIZE = (48, 40)  # width, height
SOURCE = "s3://catalog-intake/incoming/acme/SKU-1/front.jpg"


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    monkeypatch.setenv("MAX_PIXEL_DIFFERENCE", "2")
    with mock_aws():
        automatic_checks.client.cache_clear()
        create_resources(monkeypatch)
        yield boto3.client("s3", region_name=REGION)
        automatic_checks.client.cache_clear()
        settings.load.cache_clear()


def put_png(s3, key: str, pixels: np.ndarray, mode: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    s3.put_object(Bucket=WORK, Key=key, Body=buffer.getvalue(), ContentType="image/png")
    return f"s3://{WORK}/{key}"


def random_rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)


def centre_mask() -> np.ndarray:
    mask = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    mask[10:30, 12:36] = 255
    return mask


def prepared(flags: tuple[QualityFlag, ...] = ()) -> PreparedImage:
    """prepare's output, as the state machine passes it on in `$.prepared`."""
    prefix = f"s3://{WORK}/prepared/{IMAGE_ID}/"
    return PreparedImage(
        image_id=IMAGE_ID,
        brand=ResolvedBrand(brand="acme", profile_uri="s3://catalog-brands/brands/acme/profile.json"),
        sku="SKU-1",
        source=SOURCE,
        filename="front.jpg",
        publish_stem="SKU-1/front",
        content_sha256=SHA,
        intake=IntakeInfo(detected_format="JPEG", width=SIZE[0], height=SIZE[1], mode="RGB"),
        cutout=Cutout(engine="backdrop", confidence=0.97, low_confidence=False, coverage=0.3),
        checks=flags,
        files=PreparedFiles(
            cutout=f"{prefix}cutout.png",
            mask=f"{prefix}mask.png",
            packshot=f"{prefix}packshot.jpg",
            original_preview=f"{prefix}preview.original.jpg",
            cutout_preview=f"{prefix}preview.cutout.png",
            packshot_preview=f"{prefix}preview.packshot.jpg",
        ),
        reviewers=("buyer@acme.example",),
    )


def lifestyle_result(
    s3,
    product_change: int = 0,
    scene_change: int = 90,
    note: str | None = None,
    adapter_versions: dict[str, str] | None = None,
) -> JobResult:
    """A lifestyle job's result: the output keeps `placed` inside `keep_mask` unless `product_change` > 0."""
    prefix = f"gpu/outputs/{IMAGE_ID}/lifestyle/a0"
    placed = np.dstack([random_rgb(1), np.full((SIZE[1], SIZE[0]), 255, np.uint8)])
    keep = centre_mask()
    output = np.where(keep[..., None] == 255, placed[..., :3], random_rgb(2))
    output = output.astype(np.int16)
    output[keep == 0] = (output[keep == 0] + scene_change) % 256  # the painted scene: free to change
    output[15, 20] = np.clip(output[15, 20] + product_change, 0, 255)  # one product pixel
    details = {
        "placed_uri": put_png(s3, f"{prefix}/placed.png", placed, "RGBA"),
        "keep_mask_uri": put_png(s3, f"{prefix}/keep_mask.png", keep, "L"),
    }
    if note:
        details["note"] = note
    uri = put_png(s3, f"{prefix}/lifestyle_0.png", output.astype(np.uint8), "RGB")
    return JobResult(
        job_id=f"{IMAGE_ID}-lifestyle-a0",
        kind=JobKind.LIFESTYLE,
        status=Status.SUCCEEDED,
        model_version="sdxl-base-1.0",
        adapter_versions=adapter_versions or {},
        timings_s={"total": 12.5},
        outputs=(JobOutput(uri=uri, seed=11, details=details),),
    )


def try_on_result(s3, model_change: int = 0, with_mask: bool = True) -> JobResult:
    """A try-on job's result: the output repaints inside the agnostic mask, and changes the model photo
    outside it by `model_change` levels at one pixel."""
    prefix = f"gpu/outputs/{IMAGE_ID}/try_on/a0"
    model = random_rgb(3)
    agnostic = centre_mask()
    output = model.astype(np.int16)
    output[agnostic == 255] = (output[agnostic == 255] + 77) % 256  # the new garment
    output[2, 2] = np.clip(output[2, 2] + model_change, 0, 255)  # outside the mask: must not change
    details = {"model_uri": put_png(s3, f"{prefix}/model.png", model, "RGB")}
    if with_mask:
        details["agnostic_mask_uri"] = put_png(s3, f"{prefix}/try_on_0_agnostic_mask.png", agnostic, "L")
    uri = put_png(s3, f"{prefix}/try_on_0.png", output.astype(np.uint8), "RGB")
    return JobResult(
        job_id=f"{IMAGE_ID}-try-on-a0",
        kind=JobKind.TRY_ON,
        status=Status.SUCCEEDED,
        model_version="catvton-1",
        outputs=(JobOutput(uri=uri, seed=5, details=details),),
    )


def run(image: PreparedImage, results: list[JobResult] = ()) -> ReviewRequest:
    """The checks task as the workflow calls it: `$.prepared` and the GPU Map's results (each job's task output)."""
    event = {"prepared": image.model_dump(mode="json"), "gpu_results": [job_outcomes.task_output(r) for r in results]}
    ChecksInput.model_validate(event)  # the event is the contract the handler parses
    return ReviewRequest.model_validate(automatic_checks.lambda_handler(event, FakeContext()))


def items_by_id(request: ReviewRequest) -> dict[str, ReviewItem]:
    return {item.item_id: item for item in request.items}


def codes(item: ReviewItem) -> list[str]:
    return [flag.code for flag in item.flags]


def test_prepare_flags_reach_the_packshot_item(s3):
    # Given prepare flagged the packshot, and no GPU jobs were asked for
    flags = (
        QualityFlag(code="touches_edge", message="The product touches the top edge."),
        QualityFlag(code="low_resolution", severity=Severity.INFO, message="Upscaled 1.2x."),
    )
    image = prepared(flags)

    # When the checks run (the Map's result is an empty list)
    request = run(image)

    # Then the reviewer gets one packshot item carrying exactly those flags
    (packshot,) = request.items
    assert packshot.item_id == f"{IMAGE_ID}-packshot" and packshot.job_kind == "packshot"
    assert packshot.flags == flags
    # And it shows the packshot beside the original's preview, with the packshot preview for the email
    assert packshot.generated == image.files.packshot and packshot.original == image.files.original_preview
    assert packshot.details.generated_thumbnail == image.files.packshot_preview
    # And it carries the photo's provenance and the name it will be published under
    assert packshot.details.source == SOURCE and packshot.details.content_sha256 == SHA
    assert packshot.details.provenance.engine == "backdrop"
    assert packshot.details.publish_name == "SKU-1/front.packshot.jpg"
    # And the review request goes to the brand's reviewers
    assert request.brand == "acme" and request.reviewers == ("buyer@acme.example",)


def test_outputs_that_keep_their_invariants_are_not_flagged(s3):
    # Given a lifestyle output that kept the product's pixels and a try-on that kept the model photo
    results = [lifestyle_result(s3), try_on_result(s3)]

    # When the checks run, reading every file from the work bucket
    items = items_by_id(run(prepared(), results))

    # Then each output is an item of its kind with no flag, and its provenance names the model and the seed
    assert sorted(items) == [f"{IMAGE_ID}-lifestyle-a0-0", f"{IMAGE_ID}-packshot", f"{IMAGE_ID}-try-on-a0-0"]
    scene, try_on = items[f"{IMAGE_ID}-lifestyle-a0-0"], items[f"{IMAGE_ID}-try-on-a0-0"]
    assert codes(scene) == [] and codes(try_on) == []
    assert (scene.job_kind, scene.sku, scene.generated) == ("lifestyle", "SKU-1", results[0].outputs[0].uri)
    assert (scene.details.provenance.model_version, scene.details.provenance.seed) == ("sdxl-base-1.0", 11)
    assert (try_on.details.provenance.model_version, try_on.details.provenance.seed) == ("catvton-1", 5)
    # And each is published under the photo's name and its kind
    assert scene.details.publish_name == "SKU-1/front.lifestyle/lifestyle_0.png"
    assert try_on.details.publish_name == "SKU-1/front.try_on/try_on_0.png"
    # And the source photo's fingerprint travels with every item, for the feedback dataset
    assert {item.details.content_sha256 for item in items.values()} == {SHA}


def test_the_adapters_and_their_versions_reach_the_review_item(s3):
    # Given a lifestyle job that ran with two brand adapters, as its JobResult reports them
    result = lifestyle_result(s3, adapter_versions={"acme-studio": "v1", "acme-ss27": "v3"})

    # When the checks run on the job's task output (what the outcome handler resumed the Map with)
    scene = items_by_id(run(prepared(), [result]))[f"{IMAGE_ID}-lifestyle-a0-0"]

    # Then the review item says which adapters made the image, and which version of each
    provenance = scene.details.provenance
    assert provenance.engine == "lifestyle"
    assert provenance.adapter == "acme-ss27,acme-studio"
    assert provenance.adapter_version == "acme-ss27=v3,acme-studio=v1"


def test_changed_product_pixels_are_flagged_with_how_much(s3):
    # Given a lifestyle output that changed one product pixel by 9 levels (tolerance 2)
    result = lifestyle_result(s3, product_change=9)

    # When the checks run
    items = items_by_id(run(prepared(), [result]))

    # Then the reviewer sees product_pixels_changed, saying by how much
    (flag,) = items[f"{IMAGE_ID}-lifestyle-a0-0"].flags
    assert flag.code == "product_pixels_changed" and "9 levels" in flag.message


def test_the_tolerance_is_the_configured_one(s3, monkeypatch):
    # Given MAX_PIXEL_DIFFERENCE=0 and an output one level off at one product pixel
    monkeypatch.setenv("MAX_PIXEL_DIFFERENCE", "0")
    settings.load.cache_clear()
    result = lifestyle_result(s3, product_change=1)

    # When the checks run, Then even that is flagged
    items = items_by_id(run(prepared(), [result]))
    assert codes(items[f"{IMAGE_ID}-lifestyle-a0-0"]) == ["product_pixels_changed"]


def test_a_changed_model_photo_is_flagged(s3):
    # Given a try-on output that changed the model photo outside the garment area
    result = try_on_result(s3, model_change=40)

    # When the checks run, Then model_photo_changed is raised with the size of the change
    (flag,) = items_by_id(run(prepared(), [result]))[f"{IMAGE_ID}-try-on-a0-0"].flags
    assert flag.code == "model_photo_changed" and "40 levels" in flag.message


def test_a_check_that_cannot_run_says_so(s3):
    # Given a try-on result whose details lack the garment-area mask
    result = try_on_result(s3, with_mask=False)

    # When the checks run, Then the reviewer is told the model photo was not checked, and why
    (flag,) = items_by_id(run(prepared(), [result]))[f"{IMAGE_ID}-try-on-a0-0"].flags
    assert flag.code == "invariant_not_checked" and "agnostic_mask_uri" in flag.message


def test_an_unreadable_output_is_flagged_not_fatal(s3):
    # Given a GPU output that is not an image
    result = lifestyle_result(s3)
    s3.put_object(Bucket=WORK, Key=f"gpu/outputs/{IMAGE_ID}/lifestyle/a0/lifestyle_0.png", Body=b"not a png")

    # When the checks run
    items = items_by_id(run(prepared(), [result]))

    # Then the item is still sent for review, flagged as unreadable
    assert codes(items[f"{IMAGE_ID}-lifestyle-a0-0"]) == ["unreadable_output"]


def test_an_output_missing_from_the_bucket_is_flagged_not_fatal(s3):
    # Given a GPU result naming an output the bucket does not hold
    result = lifestyle_result(s3)
    s3.delete_object(Bucket=WORK, Key=f"gpu/outputs/{IMAGE_ID}/lifestyle/a0/lifestyle_0.png")

    # When the checks run, Then the other items are still reviewed and this one is flagged as unreadable
    items = items_by_id(run(prepared(), [result, try_on_result(s3)]))
    assert codes(items[f"{IMAGE_ID}-lifestyle-a0-0"]) == ["unreadable_output"]
    assert codes(items[f"{IMAGE_ID}-try-on-a0-0"]) == []


def test_a_note_from_a_test_model_is_shown_as_information(s3):
    # Given an output whose details carry the tiny model's note, When the checks run
    note = "Made by a tiny test model, not SDXL."
    result = lifestyle_result(s3, note=note)
    (flag,) = items_by_id(run(prepared(), [result]))[f"{IMAGE_ID}-lifestyle-a0-0"].flags

    # Then the reviewer sees it as information, not as a problem
    assert (flag.code, flag.severity, flag.message) == ("test_model", Severity.INFO, note)


def test_every_output_of_a_job_is_its_own_item(s3):
    # Given a job with two variations, each in its own file
    result = lifestyle_result(s3)
    folder = f"gpu/outputs/{IMAGE_ID}/lifestyle/a0"
    s3.copy_object(Bucket=WORK, Key=f"{folder}/lifestyle_1.png", CopySource=f"{WORK}/{folder}/lifestyle_0.png")
    second = result.outputs[0].model_copy(update={"seed": 12, "uri": f"s3://{WORK}/{folder}/lifestyle_1.png"})
    result = result.model_copy(update={"outputs": (*result.outputs, second)})

    # When the checks run, Then each variation is reviewed on its own, with its own seed and published name
    items = items_by_id(run(prepared(), [result]))
    first, other = items[f"{IMAGE_ID}-lifestyle-a0-0"], items[f"{IMAGE_ID}-lifestyle-a0-1"]
    assert (first.details.provenance.seed, other.details.provenance.seed) == (11, 12)
    assert other.details.publish_name == "SKU-1/front.lifestyle/lifestyle_1.png" != first.details.publish_name
    assert codes(first) == codes(other) == []
