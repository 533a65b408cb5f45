"""The checks stage on the real recipes' outputs (tiny random models on CPU, file:// URIs under tmp_path).

An honest output gets no warning (only the INFO note that the models are tiny); one pixel tampered in the written
output file gets the recipe's flag. This is what ties the checks to what the recipes actually write.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from functions.stages.checks import check_generated_output
from gpu_jobs import storage
from gpu_jobs.models import ModelRegistry
from gpu_jobs.recipes import ghost_mannequin, lifestyle, try_on
from schemas import JobKind, JobOutput, JobRequest, JobResult, QualityFlag, Severity

from .conftest import CANVAS, write_cutout


@pytest.fixture
def registry(tiny_registry: ModelRegistry) -> ModelRegistry:
    return tiny_registry  # the session's tiny registry (conftest), shared with the recipes' own tests


def _request(tmp_path: Path, kind: str, inputs: dict[str, str], **fields: object) -> JobRequest:
    return JobRequest.model_validate(
        {
            "job_id": f"checks-{kind}-0001",
            "kind": kind,
            "brand": "acme",
            "sku": "sku-1",
            "inputs": inputs,
            "output_prefix": (tmp_path / "out").as_uri(),
            **fields,
        }
    )


def _check(kind: JobKind, output: JobOutput) -> tuple[QualityFlag, ...]:
    return check_generated_output(kind, output, storage.read_image)


def _assert_honest(kind: JobKind, result: JobResult, *, tiny_note: bool = True) -> None:
    """Every output gets no warning; a diffused one carries exactly the INFO note about tiny models."""
    assert result.outputs
    for output in result.outputs:
        flags = _check(kind, output)
        assert [flag for flag in flags if flag.severity != Severity.INFO] == [], flags
        assert [flag.code for flag in flags] == (["test_model"] if tiny_note else [])


def _tamper(uri: str, row: int, column: int, value: tuple[int, ...]) -> None:
    """Overwrite one pixel of the written output file in place."""
    path = uri.removeprefix("file://")
    with Image.open(path) as image:
        pixels, mode = np.asarray(image).copy(), image.mode
    pixels[row, column] = value[: pixels.shape[2]]
    Image.fromarray(pixels, mode).save(path)


def _mask(uri: str) -> np.ndarray:
    with Image.open(uri.removeprefix("file://")) as image:
        return np.asarray(image.convert("L")) >= 128


def _warning_codes(flags: tuple[QualityFlag, ...]) -> list[str]:
    return [flag.code for flag in flags if flag.severity == Severity.WARNING]


# ---- lifestyle ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [{"fill": None}, {"fill": 0.8, "anchor": "center"}])
def test_lifestyle_outputs_pass_and_a_tampered_product_pixel_is_flagged(
    tmp_path: Path, registry: ModelRegistry, layout: dict[str, object]
) -> None:
    # Given two lifestyle variations of a cutout with a soft edge, at native size or resampled to fill the canvas
    cutout = write_cutout(tmp_path / "cutout.png").as_uri()
    params = {"width": CANVAS, "height": CANVAS, "steps": 2, "layout": layout}
    result = lifestyle.run(
        _request(tmp_path, "lifestyle", {"cutout": cutout}, seed=3, variations=2, params=params), registry
    )
    # When the checks read what the recipe wrote, then no output is flagged (the feathered seam is outside keep)
    _assert_honest(JobKind.LIFESTYLE, result)
    # And when one kept product pixel of the second output is changed on disk
    output = result.outputs[1]
    rows, columns = np.nonzero(_mask(output.details["keep_mask_uri"]))
    row, column = int(rows[len(rows) // 2]), int(columns[len(columns) // 2])
    with Image.open(output.details["placed_uri"].removeprefix("file://")) as placed:
        red = int(np.asarray(placed)[row, column, 0])
    _tamper(output.uri, row, column, (255 - red, 0, 0))
    # Then that output, and only it, is flagged, at that pixel
    flags = _check(JobKind.LIFESTYLE, output)
    assert _warning_codes(flags) == ["product_pixels_changed"]
    assert f"x={column}, y={row}" in next(flag.message for flag in flags if flag.code == "product_pixels_changed")
    assert _warning_codes(_check(JobKind.LIFESTYLE, result.outputs[0])) == []


# ---- try-on ---------------------------------------------------------------------------------------------------------
def test_try_on_outputs_pass_and_a_tampered_model_pixel_is_flagged(tmp_path: Path, registry: ModelRegistry) -> None:
    # Given a garment cutout dressed on a default-library figure
    garment = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    garment.paste((200, 30, 30, 255), (12, 8, 52, 60))
    garment.save(tmp_path / "garment.png")
    params = {"steps": 2, "model_ids": ["default-a"], "default_model_size": [96, 128]}
    request = _request(
        tmp_path, "try_on", {"garment": (tmp_path / "garment.png").as_uri()}, category="tops", seed=1, params=params
    )
    result = try_on.run(request, registry)
    # When the checks read what the recipe wrote, then no output is flagged
    _assert_honest(JobKind.TRY_ON, result)
    # And when one pixel of the model photo outside the agnostic mask (the top-left corner, backdrop) is changed
    output = result.outputs[0]
    assert not _mask(output.details["agnostic_mask_uri"])[0, 0]
    _tamper(output.uri, 0, 0, (1, 2, 3))
    # Then the model photo is flagged as changed, at that pixel
    flags = _check(JobKind.TRY_ON, output)
    assert _warning_codes(flags) == ["model_photo_changed"]
    assert "x=0, y=0" in next(flag.message for flag in flags if flag.code == "model_photo_changed")


# ---- ghost mannequin ------------------------------------------------------------------------------------------------
BACKDROP, MANNEQUIN, FRONT, INSIDE = (240, 240, 238), (150, 150, 150), (200, 60, 60), (90, 40, 120)


def _garment_photo(path: Path, *, colour: tuple[int, int, int], mannequin: bool) -> str:
    """A t-shirt (96x128) on a grey mannequin whose neck, stand and chest (through the neckline) show, or alone."""
    image = Image.new("RGB", (96, 128), BACKDROP)
    draw = ImageDraw.Draw(image)
    if mannequin:
        draw.rectangle([42, 6, 54, 40], fill=MANNEQUIN)  # neck
        draw.rectangle([30, 30, 66, 92], fill=MANNEQUIN)  # torso
        draw.rectangle([46, 90, 50, 127], fill=MANNEQUIN)  # stand
    draw.polygon([(26, 30), (70, 30), (80, 48), (68, 52), (68, 92), (28, 92), (28, 52), (16, 48)], fill=colour)
    if mannequin:
        draw.pieslice([38, 20, 58, 44], 0, 180, fill=MANNEQUIN)  # the scooped neckline shows the form
    image.save(path)
    return path.as_uri()


@pytest.mark.parametrize(("background", "back_shot"), [("white", False), ("transparent", False), ("white", True)])
def test_ghost_mannequin_outputs_pass_and_a_stray_pixel_is_flagged(
    tmp_path: Path, registry: ModelRegistry, background: str, back_shot: bool
) -> None:
    # Given a t-shirt on a mannequin, inpainted (tiny model) or filled from a back shot (no model: no note)
    inputs = {"image": _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True)}
    if back_shot:
        inputs["back"] = _garment_photo(tmp_path / "back.png", colour=INSIDE, mannequin=False)
    params = {"steps": 2, "background": background}
    result = ghost_mannequin.run(_request(tmp_path, "ghost_mannequin", inputs, seed=7, params=params), registry)
    # When the checks read what the recipe wrote, then no output is flagged
    _assert_honest(JobKind.GHOST_MANNEQUIN, result, tiny_note=not back_shot)
    # And when one pixel where the mannequin's stand was (now background) is given the mannequin's grey back
    output = result.outputs[0]
    fill, garment = _mask(output.details["fill_mask_uri"]), _mask(output.details["garment_mask_uri"])
    assert not fill[120, 48] and not garment[120, 48]
    _tamper(output.uri, 120, 48, (*MANNEQUIN, 255))
    # Then the output is flagged: a pixel that is neither garment nor background, at that place
    flags = _check(JobKind.GHOST_MANNEQUIN, output)
    assert _warning_codes(flags) == ["ghost_pixels_changed"]
    message = next(flag.message for flag in flags if flag.code == "ghost_pixels_changed")
    assert f"1 background pixel is not exactly {background}" in message and "x=48, y=120" in message


def test_a_tampered_ghost_garment_pixel_is_flagged(tmp_path: Path, registry: ModelRegistry) -> None:
    # Given an honest ghost-mannequin output from a back shot
    inputs = {
        "image": _garment_photo(tmp_path / "front.png", colour=FRONT, mannequin=True),
        "back": _garment_photo(tmp_path / "back.png", colour=INSIDE, mannequin=False),
    }
    output = ghost_mannequin.run(_request(tmp_path, "ghost_mannequin", inputs), registry).outputs[0]
    # When one garment pixel (on the body, far from the neckline) is changed on disk
    garment = _mask(output.details["garment_mask_uri"])
    assert garment[80, 48] and not _mask(output.details["fill_mask_uri"])[80, 48]
    _tamper(output.uri, 80, 48, (FRONT[0] - 50, *FRONT[1:]))
    # Then it is flagged against the input photo, by the 50 levels it moved
    flags = _check(JobKind.GHOST_MANNEQUIN, output)
    message = next(flag.message for flag in flags if flag.code == "ghost_pixels_changed")
    assert "1 garment pixel differs from front.png" in message and "by up to 50 levels" in message
