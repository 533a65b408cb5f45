"""Ghost mannequin end to end on tiny random models: the invariant checked from the written outputs alone.

One job goes through the HTTP contract (conftest's server on a loopback port); the rest call the recipe's `run`
directly with `file://` URIs, which is the same code without the JSON round trip.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_jobs.errors import JobInputError
from gpu_jobs.models import ModelRegistry
from gpu_jobs.recipes import ghost_mannequin
from schemas import JobRequest, JobResult

BACKDROP, MANNEQUIN, FRONT, INSIDE = (240, 240, 238), (150, 150, 150), (200, 60, 60), (90, 40, 120)


@pytest.fixture
def registry(tiny_registry: ModelRegistry) -> ModelRegistry:
    return tiny_registry  # the session's tiny registry (conftest), shared with the other recipes' tests


def _garment_photo(
    path: Path, *, colour: tuple[int, int, int], mannequin: bool, shift: tuple[float, float] = (0, 0), zoom: float = 1.0
) -> str:
    """A t-shirt (96x128) on a grey mannequin (neck above the collar, stand below the hem) or alone."""
    image = Image.new("RGB", (96, 128), BACKDROP)
    draw = ImageDraw.Draw(image)

    def at(x: float, y: float) -> tuple[float, float]:
        return 48 + (x - 48) * zoom + shift[0], y * zoom + shift[1]

    if mannequin:
        draw.rectangle([*at(42, 6), *at(54, 40)], fill=MANNEQUIN)  # neck
        draw.rectangle([*at(30, 30), *at(66, 92)], fill=MANNEQUIN)  # torso
        draw.rectangle([*at(46, 90), *at(50, 127)], fill=MANNEQUIN)  # stand
    shirt = [at(26, 30), at(70, 30), at(80, 48), at(68, 52), at(68, 92), at(28, 92), at(28, 52), at(16, 48)]
    draw.polygon(shirt, fill=colour)
    if mannequin:
        draw.pieslice([*at(38, 20), *at(58, 44)], 0, 180, fill=MANNEQUIN)  # the scooped neckline shows the form
    image.save(path)
    return path.as_uri()


def _request(tmp_path: Path, inputs: dict[str, str], **fields: object) -> JobRequest:
    return JobRequest.model_validate(
        {
            "job_id": "ghost-job-0001",
            "kind": "ghost_mannequin",
            "brand": "acme",
            "sku": "tee-1",
            "inputs": inputs,
            "output_prefix": (tmp_path / "out").as_uri(),
            "params": {"steps": 2},
            **fields,
        }
    )


def _load(uri: str) -> np.ndarray:
    with Image.open(uri.removeprefix("file://")) as image:
        return np.asarray(image).copy()


def _check_invariant(result: JobResult) -> tuple[np.ndarray, np.ndarray]:
    """Outside the filled region: garment pixels equal the input, every other pixel is exactly the background."""
    for output in result.outputs:
        details = output.details
        out, source = _load(output.uri), _load(details["input_uri"])
        fill, garment = _load(details["fill_mask_uri"]) > 0, _load(details["garment_mask_uri"]) > 0
        background = np.array(details["background_value"], np.uint8)
        outside = ~fill
        assert np.array_equal(out[outside & garment][:, :3], source[outside & garment])
        assert (out[outside & ~garment] == background).all()
        if out.shape[2] == 4:
            assert (out[garment | fill][:, 3] == 255).all()
    return fill, garment


def test_without_a_back_shot_only_the_neckline_is_inpainted(tmp_path: Path, registry: ModelRegistry) -> None:
    # Given a t-shirt on a mannequin whose neck, stand and chest (through the neckline) show
    image = _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True)
    # When the ghost mannequin job runs with two variations
    result = ghost_mannequin.run(_request(tmp_path, {"image": image}, seed=7, variations=2), registry)
    # Then each output keeps the invariant, and seeds are recorded per variation
    fill, _ = _check_invariant(result)
    assert [output.seed for output in result.outputs] == [7, 8]
    assert result.outputs[0].details["fill_source"] == "inpaint"
    # And the filled region is the mannequin seen through the neckline: below the shoulder line, above the hem
    source = _load(image)
    mannequin_visible = (source == MANNEQUIN).all(axis=2)
    ys, xs = np.nonzero(fill)
    assert fill.any() and ys.min() >= 29 and ys.max() <= 45 and xs.min() >= 36 and xs.max() <= 60
    assert (mannequin_visible[fill]).mean() > 0.9
    # And the neck above the collar and the stand below the hem are gone (background)
    out = _load(result.outputs[0].uri)
    assert (out[8:25, 44:53] == 255).all() and (out[100:127, 46:50] == 255).all()
    # And the inpainted pixels are new (tiny models paint noise, not grey mannequin)
    assert not (out[fill] == MANNEQUIN).all(axis=1).all()
    assert "noise by design" in result.outputs[0].details["note"]


def test_a_back_shot_fills_the_neckline_from_the_aligned_inside(tmp_path: Path, registry: ModelRegistry) -> None:
    # Given the front on a mannequin and an inside-back shot framed differently (shifted, larger)
    image = _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True)
    back = _garment_photo(tmp_path / "back.png", colour=INSIDE, mannequin=False, shift=(4, 3), zoom=1.05)
    # When the job runs with the back shot and no strength
    result = ghost_mannequin.run(_request(tmp_path, {"image": image, "back": back}, variations=3), registry)
    # Then one deterministic output (no seed) keeps the invariant
    fill, _ = _check_invariant(result)
    assert len(result.outputs) == 1 and result.outputs[0].seed is None
    assert result.outputs[0].details["fill_source"] == "back"
    # And the neckline shows the inside colour of the back shot
    out = _load(result.outputs[0].uri)
    assert (out[fill] == INSIDE).all(axis=1).mean() > 0.9


def test_a_back_shot_with_strength_is_refined_by_inpainting(tmp_path: Path, registry: ModelRegistry) -> None:
    # Given both shots and an img2img strength
    image = _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True)
    back = _garment_photo(tmp_path / "back.png", colour=INSIDE, mannequin=False)
    # When the job runs
    result = ghost_mannequin.run(_request(tmp_path, {"image": image, "back": back}, seed=3, strength=0.5), registry)
    # Then the back fill was diffused (a seed is recorded) and the invariant still holds
    _check_invariant(result)
    assert result.outputs[0].seed == 3 and result.outputs[0].details["fill_source"] == "back"


def test_transparent_background_is_exactly_transparent(tmp_path: Path, registry: ModelRegistry) -> None:
    image = _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True)
    back = _garment_photo(tmp_path / "back.png", colour=INSIDE, mannequin=False)
    result = ghost_mannequin.run(
        _request(tmp_path, {"image": image, "back": back}, params={"background": "transparent"}), registry
    )
    fill, garment = _check_invariant(result)
    out = _load(result.outputs[0].uri)
    assert out.shape[2] == 4 and (out[~(fill | garment)] == 0).all()


@pytest.mark.parametrize(
    ("inputs", "params", "field"),
    [
        ({}, {}, "inputs.image"),
        ({"image": "front"}, {"background": "blue"}, "params.background"),
        ({"image": "front"}, {"steps": 0}, "params.steps"),
        ({"image": "missing"}, {}, "inputs.image"),
        ({"image": "blank"}, {}, "inputs.image"),
        ({"image": "front", "back": "blank"}, {}, "inputs.back"),
    ],
)
def test_bad_inputs_name_the_field(
    tmp_path: Path, registry: ModelRegistry, inputs: dict[str, str], params: dict[str, object], field: str
) -> None:
    # Given a request with one thing wrong (no image, a bad parameter, a missing file, a photo with no garment)
    files = {
        "front": _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True),
        "missing": (tmp_path / "missing.png").as_uri(),
        "blank": _garment_photo(tmp_path / "blank.png", colour=BACKDROP, mannequin=False),
    }
    request = _request(tmp_path, {key: files[value] for key, value in inputs.items()}, params=params)
    # When it runs, then the error names the field to fix
    with pytest.raises(JobInputError) as caught:
        ghost_mannequin.run(request, registry)
    assert caught.value.field == field


def test_through_the_http_contract(tmp_path: Path, invoke: Any) -> None:
    # Given a garment-on-mannequin photo and a request as SageMaker would post it
    image = _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True)
    payload = _request(tmp_path, {"image": image}, seed=11).model_dump(mode="json")
    # When it is posted to /invocations
    status, body = invoke(payload)
    # Then the job succeeds and its written outputs keep the invariant
    assert status == 200, body
    result = JobResult.model_validate(body)
    assert result.status == "succeeded" and result.outputs[0].seed == 11
    _check_invariant(result)
    # And a malformed parameter is a 4xx naming the field
    status, body = invoke(_request(tmp_path, {"image": image}, params={"background": "blue"}).model_dump(mode="json"))
    assert 400 <= status < 500 and body["error"]["field"] == "params.background"
