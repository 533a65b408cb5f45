"""`automatic_checks` against moto: every prepared and generated image becomes a review item; prepare's flags pass
through on the packshot, and each GPU output gets flags from the invariants its recipe promises, checked on the
files it wrote."""

import io

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

from functions.handlers import automatic_checks
from schemas.review import ReviewItem

from .aws_fixtures import REGION, WORK, FakeContext, create_resources

SHA = "cd" * 32
SIZE = (48, 40)  # width, height


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
        automatic_checks.settings.load.cache_clear()


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


def prepared(flags: list[dict] | None = None) -> dict:
    """prepare's output, as the state machine passes it on in `$.prepared`."""
    return {
        "image_id": "img1",
        "brand": "acme",
        "sku": "SKU-1",
        "filename": "front.jpg",
        "original": "s3://catalog-intake/incoming/acme/SKU-1/front.jpg",
        "content_sha256": SHA,
        "engine": "backdrop",
        "flags": flags or [],
        "reviewers": ["buyer@acme.example"],
        "normalised": f"s3://{WORK}/prepared/img1/normalised.png",
        "cutout": f"s3://{WORK}/prepared/img1/cutout.png",
        "mask": f"s3://{WORK}/prepared/img1/mask.png",
        "packshot": f"s3://{WORK}/prepared/img1/packshot.jpg",
        "jobs": [],
    }


def lifestyle_result(s3, product_change: int = 0, scene_change: int = 90, note: str | None = None) -> dict:
    """A lifestyle job's Map result: the output keeps `placed` inside `keep_mask` unless `product_change` > 0."""
    prefix = "gpu/outputs/img1/lifestyle/a0"
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
    return {
        "job_id": "img1-lifestyle-a0",
        "kind": "lifestyle",
        "status": "succeeded",
        "model_version": "sdxl-base-1.0",
        "outputs": [{"uri": uri, "seed": 11, "details": details}],
    }


def try_on_result(s3, model_change: int = 0) -> dict:
    """A try-on job's Map result: the output repaints inside the agnostic mask, and changes the model photo
    outside it by `model_change` levels at one pixel."""
    prefix = "gpu/outputs/img1/try_on/a0"
    model = random_rgb(3)
    agnostic = centre_mask()
    output = model.astype(np.int16)
    output[agnostic == 255] = (output[agnostic == 255] + 77) % 256  # the new garment
    output[2, 2] = np.clip(output[2, 2] + model_change, 0, 255)  # outside the mask: must not change
    details = {
        "model_uri": put_png(s3, f"{prefix}/model.png", model, "RGB"),
        "agnostic_mask_uri": put_png(s3, f"{prefix}/try_on_0_agnostic_mask.png", agnostic, "L"),
    }
    uri = put_png(s3, f"{prefix}/try_on_0.png", output.astype(np.uint8), "RGB")
    return {
        "job_id": "img1-try-on-a0",
        "kind": "try_on",
        "status": "succeeded",
        "model_version": "catvton-1",
        "outputs": [{"uri": uri, "seed": 5, "details": details}],
    }


def run(event: dict) -> dict:
    return automatic_checks.lambda_handler(event, FakeContext())


def items_by_id(response: dict) -> dict[str, ReviewItem]:
    return {entry["item_id"]: ReviewItem.model_validate(entry) for entry in response["items"]}


def codes(item: ReviewItem) -> list[str]:
    return [flag.code for flag in item.flags]


def test_prepare_flags_reach_the_packshot_item(s3):
    # Given prepare flagged the packshot, and no GPU jobs were asked for
    flags = [
        {"code": "touches_edge", "severity": "warning", "message": "The product touches the top edge."},
        {"code": "low_resolution", "severity": "info", "message": "Upscaled 1.2x."},
    ]

    # When the checks run (the Map's result is an empty list)
    response = run({"prepared": prepared(flags), "gpu_results": []})

    # Then the reviewer gets one packshot item carrying exactly those flags and the photo's provenance
    (packshot,) = items_by_id(response).values()
    assert packshot.item_id == "img1-packshot" and packshot.job_kind == "packshot"
    assert [flag.model_dump(mode="json") for flag in packshot.flags] == flags
    assert packshot.generated == prepared()["packshot"] and packshot.original == prepared()["normalised"]
    assert packshot.details.source == prepared()["original"] and packshot.details.content_sha256 == SHA
    assert packshot.details.provenance.engine == "backdrop"
    # And the review request goes to the brand's reviewers
    assert response["brand"] == "acme" and response["reviewers"] == ["buyer@acme.example"]


def test_outputs_that_keep_their_invariants_are_not_flagged(s3):
    # Given a lifestyle output that kept the product's pixels and a try-on that kept the model photo
    results = [lifestyle_result(s3), try_on_result(s3)]

    # When the checks run
    items = items_by_id(run({"prepared": prepared(), "gpu_results": results}))

    # Then each output is an item of its kind with no flag, and its provenance names the model and the seed
    assert sorted(items) == ["img1-lifestyle-a0-0", "img1-packshot", "img1-try-on-a0-0"]
    scene, try_on = items["img1-lifestyle-a0-0"], items["img1-try-on-a0-0"]
    assert codes(scene) == [] and codes(try_on) == []
    assert (scene.job_kind, scene.sku, scene.generated) == ("lifestyle", "SKU-1", results[0]["outputs"][0]["uri"])
    assert (scene.details.provenance.model_version, scene.details.provenance.seed) == ("sdxl-base-1.0", 11)
    assert (try_on.details.provenance.model_version, try_on.details.provenance.seed) == ("catvton-1", 5)
    # And the source photo's fingerprint travels with every item, for the feedback dataset
    assert {item.details.content_sha256 for item in items.values()} == {SHA}


def test_changed_product_pixels_are_flagged_with_how_much(s3):
    # Given a lifestyle output that changed one product pixel by 9 levels (tolerance 2)
    result = lifestyle_result(s3, product_change=9)

    # When the checks run
    items = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))

    # Then the reviewer sees product_pixels_changed, saying by how much
    (flag,) = items["img1-lifestyle-a0-0"].flags
    assert flag.code == "product_pixels_changed" and "9 levels" in flag.message


def test_a_difference_within_the_tolerance_is_not_flagged(s3):
    result = lifestyle_result(s3, product_change=2)
    items = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))
    assert codes(items["img1-lifestyle-a0-0"]) == []


def test_the_tolerance_is_the_configured_one(s3, monkeypatch):
    # Given MAX_PIXEL_DIFFERENCE=0 and an output one level off at one product pixel
    monkeypatch.setenv("MAX_PIXEL_DIFFERENCE", "0")
    automatic_checks.settings.load.cache_clear()
    result = lifestyle_result(s3, product_change=1)

    # When the checks run, Then even that is flagged
    items = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))
    assert codes(items["img1-lifestyle-a0-0"]) == ["product_pixels_changed"]


def test_a_changed_model_photo_is_flagged(s3):
    # Given a try-on output that changed the model photo outside the garment area
    result = try_on_result(s3, model_change=40)

    # When the checks run, Then model_photo_changed is raised with the size of the change
    (flag,) = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))["img1-try-on-a0-0"].flags
    assert flag.code == "model_photo_changed" and "40 levels" in flag.message


def test_an_output_of_the_wrong_size_is_flagged(s3):
    # Given a lifestyle output that is not the size of the placed product canvas
    result = lifestyle_result(s3)
    small = np.zeros((SIZE[1] // 2, SIZE[0] // 2, 3), np.uint8)
    result["outputs"][0]["uri"] = put_png(s3, "gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", small, "RGB")

    # When the checks run, Then the product cannot be shown to be intact: flagged
    items = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))
    assert codes(items["img1-lifestyle-a0-0"]) == ["product_pixels_changed"]


def test_an_unreadable_output_is_flagged_not_fatal(s3):
    # Given a GPU output that is not an image
    result = lifestyle_result(s3)
    s3.put_object(Bucket=WORK, Key="gpu/outputs/img1/lifestyle/a0/lifestyle_0.png", Body=b"not a png")

    # When the checks run
    items = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))

    # Then the item is still sent for review, flagged as unreadable
    assert codes(items["img1-lifestyle-a0-0"]) == ["unreadable_output"]


def test_a_note_from_a_test_model_is_shown_as_information(s3):
    # Given an output whose details carry the tiny model's note, When the checks run
    note = "Made by a tiny test model, not SDXL."
    result = lifestyle_result(s3, note=note)
    (flag,) = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))["img1-lifestyle-a0-0"].flags

    # Then the reviewer sees it as information, not as a problem
    assert (flag.code, flag.severity.value, flag.message) == ("test_model", "info", note)


def test_every_output_of_a_job_is_its_own_item(s3):
    # Given a job with two variations
    result = lifestyle_result(s3)
    result["outputs"].append({**result["outputs"][0], "seed": 12})

    # When the checks run, Then each variation is reviewed on its own, with its own seed
    items = items_by_id(run({"prepared": prepared(), "gpu_results": [result]}))
    assert items["img1-lifestyle-a0-0"].details.provenance.seed == 11
    assert items["img1-lifestyle-a0-1"].details.provenance.seed == 12
