"""Lifestyle recipe: the product's own pixels survive exactly, checked from the outputs alone."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpu_jobs.config import ModelConfig
from gpu_jobs.inprocess import run_job_in_process
from schemas import JobRequest, JobResult

from .conftest import CANVAS, job_request_dict, load_rgb, write_cutout

PARAMS = {"width": CANVAS, "height": CANVAS, "steps": 2}


def _check_invariant_from_outputs(result: JobResult) -> np.ndarray:
    """Inside keep_mask every output pixel equals placed.png; returns the keep mask."""
    details = result.outputs[0].details
    keep = np.asarray(Image.open(details["keep_mask_uri"].removeprefix("file://"))) == 255
    placed = np.asarray(Image.open(details["placed_uri"].removeprefix("file://")).convert("RGBA"))
    assert keep.sum() > 50, "the product must keep some pixels"
    for output in result.outputs:
        image = load_rgb(output.uri)
        assert image.shape[:2] == keep.shape
        assert np.array_equal(image[keep], placed[..., :3][keep])
        # ...and the scene around it was really painted (the canvas was mid-grey there)
        assert (image[~keep] != placed[..., :3][~keep]).any()
    return keep


def test_lifestyle_keeps_the_product_pixels_exactly_at_native_size(invoke, tmp_path: Path) -> None:
    # Given a cutout placed at its native size (no resampling)
    cutout_path = write_cutout(tmp_path / "cutout.png")
    params = {**PARAMS, "layout": {"fill": None, "anchor": "bottom", "margin": 0.05}}
    status, body = invoke(
        job_request_dict("lifestyle", {"cutout": cutout_path.as_uri()}, tmp_path / "out", variations=2, params=params)
    )
    assert status == 200, body
    result = JobResult.model_validate(body)
    # Then inside the eroded product mask each output equals the input, pixel for pixel
    keep = _check_invariant_from_outputs(result)
    # And placed.png holds the cutout's own pixels at the recorded box, centred at the bottom margin
    details = result.outputs[0].details
    box = details["placement_box"]
    cutout = np.asarray(Image.open(cutout_path))
    visible = cutout[3:-3, 3:-3]  # the crop is the visible (alpha > 0) region
    output = load_rgb(result.outputs[1].uri)
    window = output[box["top"] : box["bottom"], box["left"] : box["right"]]
    opaque = visible[..., 3] == 255
    core = keep[box["top"] : box["bottom"], box["left"] : box["right"]]
    assert window.shape[:2] == visible.shape[:2] and details["scale"] == 1.0
    assert np.array_equal(window[core & opaque], visible[..., :3][core & opaque])
    assert box["bottom"] == CANVAS - round(0.05 * CANVAS) and box["left"] + box["right"] in (CANVAS, CANVAS + 1)
    # And the edge band is repainted: keep is strictly inside the product
    assert keep.sum() < (visible[..., 3] >= 128).sum()


@pytest.mark.parametrize("controlnet", [None, "canny", "depth"])
def test_lifestyle_invariant_holds_when_scaled_and_with_controlnets(invoke, tmp_path: Path, controlnet) -> None:
    # Given a cutout scaled to fill 80% of the canvas, centred, optionally with a ControlNet
    params = {**PARAMS, "layout": {"fill": 0.8, "anchor": "center"}, "controlnet": controlnet}
    inputs = {"cutout": write_cutout(tmp_path / "cutout.png", 20, 30).as_uri()}
    status, body = invoke(job_request_dict("lifestyle", inputs, tmp_path / "out", seed=3, params=params))
    assert status == 200, body
    result = JobResult.model_validate(body)
    # Then the invariant holds and the recorded box has the scaled size
    _check_invariant_from_outputs(result)
    details = result.outputs[0].details
    box = details["placement_box"]
    assert max(box["bottom"] - box["top"], box["right"] - box["left"]) == pytest.approx(0.8 * CANVAS, abs=1)
    if controlnet is not None:
        control = np.asarray(Image.open(details["control_image_uri"].removeprefix("file://")))
        assert control.max() > 0 and control.shape[:2] == (CANVAS, CANVAS)


def test_controlnet_changes_the_scene(invoke, tmp_path: Path) -> None:
    # Given the same request with and without a canny ControlNet
    inputs = {"cutout": write_cutout(tmp_path / "cutout.png").as_uri()}
    plain = invoke(job_request_dict("lifestyle", inputs, tmp_path / "a", seed=5, params=PARAMS))[1]
    guided = invoke(
        job_request_dict("lifestyle", inputs, tmp_path / "b", seed=5, params={**PARAMS, "controlnet": "canny"})
    )[1]
    # Then the control image steers the result
    assert not np.array_equal(load_rgb(plain["outputs"][0]["uri"]), load_rgb(guided["outputs"][0]["uri"]))


def test_seeds_are_recorded_and_reproduce_the_image(invoke, tmp_path: Path) -> None:
    inputs = {"cutout": write_cutout(tmp_path / "cutout.png").as_uri()}
    # Given a job with seed 42 and two variations, the same job again, and a single job with seed 43
    first = invoke(job_request_dict("lifestyle", inputs, tmp_path / "a", seed=42, variations=2, params=PARAMS))[1]
    repeat = invoke(job_request_dict("lifestyle", inputs, tmp_path / "b", seed=42, variations=2, params=PARAMS))[1]
    single = invoke(job_request_dict("lifestyle", inputs, tmp_path / "c", seed=43, params=PARAMS))[1]
    # Then each variation records its seed, and the same seeds give the same images
    assert [o["seed"] for o in first["outputs"]] == [42, 43]
    for mine, again in zip(first["outputs"], repeat["outputs"], strict=True):
        assert np.array_equal(load_rgb(mine["uri"]), load_rgb(again["uri"]))
    assert not np.array_equal(load_rgb(first["outputs"][0]["uri"]), load_rgb(first["outputs"][1]["uri"]))
    # And a recorded seed regenerates its variation on its own
    assert np.array_equal(load_rgb(first["outputs"][1]["uri"]), load_rgb(single["outputs"][0]["uri"]))
    # Without a seed, one is drawn and recorded
    unseeded = invoke(job_request_dict("lifestyle", inputs, tmp_path / "d", params=PARAMS))[1]
    assert isinstance(unseeded["outputs"][0]["seed"], int)


def test_brand_profile_builds_the_prompt(invoke, tmp_path: Path) -> None:
    # Given a brand profile with a trigger token, a template for the collection and a scene preset
    profile = {
        "brand": "acme",
        "trigger_token": "acmestyle",
        "prompt_templates": {"summer": "{title} in {colour} on a beach", "tops": "a top"},
        "negative_prompt": "ugly",
        "scene_presets": [{"name": "terrace", "prompt": "sunny terrace", "negative_prompt": "rain"}],
    }
    params = {
        **PARAMS,
        "brand_profile": profile,
        "scene": "terrace",
        "product": {"title": "linen shirt", "colour": "sand", "collection": "summer"},
    }
    status, body = invoke(
        job_request_dict(
            "lifestyle",
            {"cutout": write_cutout(tmp_path / "c.png").as_uri()},
            tmp_path / "o",
            category="tops",
            params=params,
        )
    )
    assert status == 200, body
    details = body["outputs"][0]["details"]
    assert details["prompt"] == "acmestyle, linen shirt in sand on a beach, sunny terrace"
    assert details["negative_prompt"] == "rain"
    # And an unknown scene or an unsafe template placeholder is the caller's error, naming the field
    status, body = invoke(
        job_request_dict(
            "lifestyle",
            {"cutout": write_cutout(tmp_path / "c.png").as_uri()},
            tmp_path / "o2",
            params={**params, "scene": "moon"},
        )
    )
    assert status == 422 and body["error"]["field"] == "params.scene"
    bad = {**profile, "prompt_templates": {"summer": "{title.__class__}"}}
    status, body = invoke(
        job_request_dict(
            "lifestyle",
            {"cutout": write_cutout(tmp_path / "c.png").as_uri()},
            tmp_path / "o3",
            params={**params, "brand_profile": bad},
        )
    )
    assert status == 422 and body["error"]["field"] == "brand_profile.prompt_templates.summer"


def test_brand_profile_can_come_from_a_json_uri(invoke, tmp_path: Path) -> None:
    profile_path = tmp_path / "brand.json"
    profile_path.write_text('{"brand": "acme", "trigger_token": "acmestyle"}')
    inputs = {"cutout": write_cutout(tmp_path / "c.png").as_uri(), "brand_profile": profile_path.as_uri()}
    status, body = invoke(job_request_dict("lifestyle", inputs, tmp_path / "o", params=PARAMS))
    assert status == 200 and body["outputs"][0]["details"]["prompt"].startswith("acmestyle, ")


def test_image_and_mask_inputs_work_like_a_cutout(invoke, tmp_path: Path) -> None:
    cutout = Image.open(write_cutout(tmp_path / "c.png"))
    cutout.convert("RGB").save(tmp_path / "image.png")
    cutout.getchannel("A").save(tmp_path / "mask.png")
    inputs = {"image": (tmp_path / "image.png").as_uri(), "mask": (tmp_path / "mask.png").as_uri()}
    status, body = invoke(job_request_dict("lifestyle", inputs, tmp_path / "o", params=PARAMS))
    assert status == 200, body
    _check_invariant_from_outputs(JobResult.model_validate(body))


def test_text2img_and_img2img_are_reachable(invoke, tmp_path: Path) -> None:
    # Text only: no inputs at all
    status, body = invoke(job_request_dict("lifestyle", {}, tmp_path / "t", params={**PARAMS, "mode": "text2img"}))
    assert status == 200 and load_rgb(body["outputs"][0]["uri"]).shape == (CANVAS, CANVAS, 3)
    # Image-conditioned with a strength: the strength is recorded and changes the result
    inputs = {"image": write_cutout(tmp_path / "c.png").as_uri()}
    outputs = []
    for strength in (0.5, 1.0):
        status, body = invoke(
            job_request_dict(
                "lifestyle",
                inputs,
                tmp_path / f"i{strength}",
                seed=1,
                strength=strength,
                params={**PARAMS, "mode": "img2img"},
            )
        )
        assert status == 200, body
        assert body["outputs"][0]["details"]["strength"] == strength
        outputs.append(load_rgb(body["outputs"][0]["uri"]))
    assert not np.array_equal(outputs[0], outputs[1])


def test_in_process_run_matches_the_contract(tmp_path: Path) -> None:
    # Given the in-process entry point catalog run uses
    config = ModelConfig.tiny(lora_cache_dir=tmp_path / "cache")
    request = JobRequest.model_validate(
        job_request_dict(
            "lifestyle", {"cutout": write_cutout(tmp_path / "c.png").as_uri()}, tmp_path / "o", params=PARAMS
        )
    )
    # Then a good request succeeds and the invariant holds
    result = run_job_in_process(request, config)
    assert result.status == "succeeded"
    _check_invariant_from_outputs(result)
    # And a bad one comes back as a failed result with a stable code instead of raising
    broken = request.model_copy(update={"inputs": {"cutout": (tmp_path / "missing.png").as_uri()}})
    failed = run_job_in_process(broken, config)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "bad_input"
    assert "inputs.cutout" in failed.error.message
