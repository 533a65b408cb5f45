"""Virtual try-on end to end on tiny random models: invariant from the outputs, engines, licence gate, bad inputs.

One job goes through the HTTP contract (conftest's server on a loopback port); the rest call the recipe's `run`
directly with `file://` URIs, which is the same code without the JSON round trip.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gpu_jobs.config import ModelConfig
from gpu_jobs.errors import JobInputError
from gpu_jobs.licences import LicenceError
from gpu_jobs.model_library import FIGURE_TONES, draw_default_model
from gpu_jobs.models import ModelRegistry
from gpu_jobs.recipes import try_on
from schemas import JobRequest, JobResult

SIZE = [96, 128]


@pytest.fixture
def registry(tiny_registry: ModelRegistry) -> ModelRegistry:
    return tiny_registry  # the session's tiny registry (conftest), shared with the other recipes' tests


@pytest.fixture
def garment(tmp_path: Path) -> str:
    # A red garment cutout: RGBA, transparent around it.
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((200, 30, 30, 255), (12, 8, 52, 60))
    path = tmp_path / "garment.png"
    image.save(path)
    return path.as_uri()


def _request(tmp_path: Path, inputs: dict[str, str], **fields: Any) -> JobRequest:
    params = {"steps": 2, "model_ids": ["default-a"], "default_model_size": SIZE, **fields.pop("params", {})}
    return JobRequest.model_validate(
        {
            "job_id": "try-on-job-0001",
            "kind": "try_on",
            "brand": "acme",
            "sku": "tee-1",
            "category": fields.pop("category", "tops"),
            "inputs": inputs,
            "output_prefix": (tmp_path / "out").as_uri(),
            "params": params,
            **fields,
        }
    )


def _load(uri: str) -> np.ndarray:
    with Image.open(uri.removeprefix("file://")) as image:
        return np.asarray(image.convert("RGB") if image.mode == "RGB" else image).copy()


def _check_invariant(result: JobResult) -> list[np.ndarray]:
    """Outside each output's agnostic mask the output equals the model photo exactly; inside it changed."""
    masks = []
    for output in result.outputs:
        out, model = _load(output.uri), _load(output.details["model_uri"])
        mask = _load(output.details["agnostic_mask_uri"]) > 0
        assert np.array_equal(out[~mask], model[~mask])
        assert (out[mask] != model[mask]).any(axis=1).mean() > 0.5
        masks.append(mask)
    return masks


def test_categories_repaint_different_regions_and_keep_the_rest(
    tmp_path: Path, registry: ModelRegistry, garment: str
) -> None:
    # Given a garment and a default-library figure
    masks = {}
    for category in ("tops", "bottoms", "dresses"):
        # When try-on runs for each category
        result = try_on.run(_request(tmp_path / category, {"garment": garment}, category=category, seed=1), registry)
        # Then the invariant holds and the mask is the category's region
        (masks[category],) = _check_invariant(result)
        assert result.outputs[0].seed == 1 and "noise by design" in result.outputs[0].details["note"]
    figure = draw_default_model("default-a", tuple(SIZE))  # type: ignore[arg-type]
    top = (np.asarray(figure) == FIGURE_TONES["upper_clothes"]).all(axis=2)
    trousers = (np.asarray(figure) == FIGURE_TONES["pants"]).all(axis=2)
    face = (np.asarray(figure) == FIGURE_TONES["face"]).all(axis=2)
    assert masks["tops"][top].all() and not masks["tops"][trousers].all()
    assert masks["bottoms"][trousers].all() and not masks["bottoms"][top].all()
    assert masks["dresses"][top].all() and masks["dresses"][trousers].all()
    assert not any(mask[face].any() for mask in masks.values())


def test_brand_library_photos_are_used_and_strength_is_accepted(
    tmp_path: Path, registry: ModelRegistry, garment: str
) -> None:
    # Given a brand profile whose library holds one photo for tops and one for bottoms only
    photos = []
    for model_id, regions in (("ana", ["tops"]), ("ben", ["bottoms"])):
        path = tmp_path / f"{model_id}.png"
        draw_default_model("default-c", (80, 112)).save(path)
        photos.append({"model_id": model_id, "uri": path.as_uri(), "body_regions": regions})
    brand = {"brand": "acme", "commercial": True, "model_library": photos}
    # When a tops try-on runs from the model photo with strength < 1, two variations
    request = _request(
        tmp_path,
        {"garment": garment},
        params={"brand_profile": brand, "model_ids": None},
        strength=0.6,
        seed=5,
        variations=2,
    )
    result = try_on.run(request, registry)
    # Then only the tops photo was dressed, twice, with the invariant
    assert [output.details["model_id"] for output in result.outputs] == ["ana", "ana"]
    assert result.outputs[0].details["model_uri"] == photos[0]["uri"]
    assert [output.seed for output in result.outputs] == [5, 6]
    _check_invariant(result)


def test_a_try_on_job_leaves_the_shared_unet_as_it_was(tmp_path: Path, registry: ModelRegistry, garment: str) -> None:
    # Given the shared inpaint pipeline's output before any try-on
    pipe: Any = registry.pipeline("inpaint")
    processors = dict(pipe.unet.attn_processors)
    image = Image.new("RGB", (64, 64), (120, 130, 140))
    mask = Image.new("L", (64, 64), 255)

    def paint() -> np.ndarray:
        generated = pipe(
            "a scene",
            image=image,
            mask_image=mask,
            height=64,
            width=64,
            num_inference_steps=2,
            generator=registry.generator(0),
        ).images[0]
        return np.asarray(generated)

    before = paint()
    # When a try-on job runs (it attaches the IP-Adapter to that UNet)
    try_on.run(_request(tmp_path, {"garment": garment}, seed=2), registry)
    # Then the UNet has its own processors back, no image projection, and paints exactly as before
    assert all(pipe.unet.attn_processors[name] is processor for name, processor in processors.items())
    assert pipe.unet.encoder_hid_proj is None and pipe.image_encoder is None
    assert np.array_equal(paint(), before)


def test_the_garment_image_conditions_the_result(tmp_path: Path, registry: ModelRegistry, garment: str) -> None:
    # Given a second garment of another colour
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), (20, 160, 60)).save(other)
    # When the same seed dresses the same figure in each
    first = try_on.run(_request(tmp_path / "a", {"garment": garment}, seed=4), registry)
    second = try_on.run(_request(tmp_path / "b", {"garment": other.as_uri()}, seed=4), registry)
    # Then the IP-Adapter made the results differ
    assert not np.array_equal(_load(first.outputs[0].uri), _load(second.outputs[0].uri))


def test_a_depth_controlnet_runs_with_a_derived_depth_map(
    tmp_path: Path, registry: ModelRegistry, garment: str
) -> None:
    result = try_on.run(_request(tmp_path, {"garment": garment}, seed=1, params={"controlnet": "depth"}), registry)
    _check_invariant(result)
    assert result.outputs[0].details["controlnet"] == "depth"


def test_catvton_is_refused_by_a_commercial_deployment(tmp_path: Path, garment: str) -> None:
    # Given a commercial deployment configured with CatVTON weights (CC BY-NC-SA 4.0)
    catvton = {
        "name": "catvton",
        "source": str(tmp_path / "catvton"),
        "licence": "cc-by-nc-sa-4.0",
        "commercial_use": False,
    }
    registry = ModelRegistry(ModelConfig.tiny(commercial=True, catvton=catvton))
    # When a try-on asks for that engine, then the licence gate refuses it before loading anything
    with pytest.raises(LicenceError, match="does not allow commercial use"):
        try_on.run(_request(tmp_path, {"garment": garment}, params={"engine": "catvton"}), registry)


def test_catvton_in_a_non_commercial_deployment_needs_its_local_folder(tmp_path: Path, garment: str) -> None:
    # Given a non-commercial deployment and brand, with the CatVTON folder absent
    catvton = {
        "name": "catvton",
        "source": str(tmp_path / "catvton"),
        "licence": "cc-by-nc-sa-4.0",
        "commercial_use": False,
    }
    registry = ModelRegistry(ModelConfig.tiny(commercial=False, catvton=catvton))
    brand = {"brand": "lab", "commercial": False}
    request = _request(tmp_path, {"garment": garment}, params={"engine": "catvton", "brand_profile": brand})
    # When it runs, then the error says which files are missing and where they go
    with pytest.raises(FileNotFoundError, match=r"catvton.*attention/model\.safetensors"):
        try_on.run(request, registry)
    # And a commercial brand on that deployment is still refused
    commercial = _request(
        tmp_path, {"garment": garment}, params={"engine": "catvton", "brand_profile": {"brand": "shop"}}
    )
    with pytest.raises(LicenceError):
        try_on.run(commercial, registry)


@pytest.mark.parametrize(
    ("inputs", "fields", "field"),
    [
        ({}, {}, "inputs.garment"),
        ({"garment": "garment"}, {"category": "shoes"}, "category"),
        ({"garment": "garment"}, {"params": {"engine": "magic"}}, "params.engine"),
        ({"garment": "garment"}, {"params": {"controlnet": "pose"}}, "inputs.control"),
        ({"garment": "garment"}, {"params": {"model_ids": ["nobody"]}}, "params.model_ids"),
        ({"garment": "garment"}, {"params": {"brand_profile": {"brand": "Not Valid"}}}, "params.brand_profile"),
        ({"garment": "missing"}, {}, "inputs.garment"),
        ({"garment": "garment", "model": "blank"}, {}, "inputs.model"),
    ],
)
def test_bad_inputs_name_the_field(
    tmp_path: Path, registry: ModelRegistry, garment: str, inputs: dict[str, str], fields: dict[str, Any], field: str
) -> None:
    # Given a request with one thing wrong
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 96), FIGURE_TONES["background"]).save(blank)
    files = {"garment": garment, "missing": (tmp_path / "missing.png").as_uri(), "blank": blank.as_uri()}
    request = _request(tmp_path, {key: files[value] for key, value in inputs.items()}, **fields)
    # When it runs, then the error names the field to fix
    with pytest.raises(JobInputError) as caught:
        try_on.run(request, registry)
    assert caught.value.field == field


def test_through_the_http_contract(tmp_path: Path, invoke: Any, garment: str) -> None:
    # Given a garment cutout and a try-on request as SageMaker would post it
    payload = _request(tmp_path, {"garment": garment}, category="bottoms", seed=9).model_dump(mode="json")
    # When it is posted to /invocations
    status, body = invoke(payload)
    # Then the job succeeds, and outside the agnostic mask the output is the model photo
    assert status == 200, body
    result = JobResult.model_validate(body)
    assert result.status == "succeeded" and result.outputs[0].details["region"] == "lower"
    _check_invariant(result)
    # And an unsupported category is a 4xx naming the field
    status, body = invoke(_request(tmp_path, {"garment": garment}, category="shoes").model_dump(mode="json"))
    assert 400 <= status < 500 and body["error"]["field"] == "category"


def test_an_unlabelled_garment_is_refused_with_how_to_fix_it(registry, tmp_path):
    # Given a garment whose category is `other` (a photo without a sidecar)
    garment = tmp_path / "garment.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(garment)
    # When try-on runs, Then it refuses, saying exactly how to name the category
    with pytest.raises(JobInputError) as refused:
        try_on.run(_request(tmp_path / "out", {"garment": garment.as_uri()}, category="other", seed=1), registry)
    message = str(refused.value)
    assert "got 'other'" in message
    assert 'Add "category" to the SKU\'s product.json or pass --category tops|bottoms|dresses|outerwear' in message
