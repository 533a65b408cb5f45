"""Ghost mannequin on `--models tiny` with a garment the tiny segmenter cannot see (white, grey): the recipe falls
back to the cutout mask prepare made and says so; with real weights "no garment" stays the answer."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_jobs.errors import JobInputError
from gpu_jobs.models import ModelRegistry
from gpu_jobs.recipes import ghost_mannequin
from schemas import JobRequest

BACKDROP, GREY_HOODIE = (246, 246, 246), (92, 94, 98)
SHIRT = [(26, 30), (70, 30), (80, 48), (68, 52), (68, 92), (28, 92), (28, 52), (16, 48)]


def _photo_and_mask(folder: Path) -> tuple[str, str]:
    """A charcoal garment (no saturation: garment-blind for the tiny segmenter) and its cutout mask."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.new("RGB", (96, 128), BACKDROP)
    ImageDraw.Draw(photo).polygon(SHIRT, fill=GREY_HOODIE)
    mask = Image.new("L", (96, 128), 0)
    ImageDraw.Draw(mask).polygon(SHIRT, fill=255)
    photo.save(folder / "normalised.png")
    mask.save(folder / "mask.png")
    return (folder / "normalised.png").as_uri(), (folder / "mask.png").as_uri()


def _request(folder: Path, inputs: dict[str, str]) -> JobRequest:
    return JobRequest.model_validate(
        {
            "job_id": "ghost-fallback-0001",
            "kind": "ghost_mannequin",
            "brand": "acme",
            "sku": "hoodie-1",
            "inputs": inputs,
            "output_prefix": (folder / "out").as_uri(),
            "params": {"steps": 2},
        }
    )


def test_tiny_models_fall_back_to_the_cutout_mask_and_say_so(tmp_path: Path, tiny_registry: ModelRegistry) -> None:
    # Given a grey garment the tiny clothes segmenter finds nothing in, and prepare's cutout mask
    image, mask = _photo_and_mask(tmp_path)
    # When ghost mannequin runs on tiny models with the mask
    result = ghost_mannequin.run(_request(tmp_path, {"image": image, "mask": mask}), tiny_registry)
    # Then it succeeds, and its details say the garment came from the cutout mask because the models are tiny
    (output,) = result.outputs
    assert output.details["garment_mask_source"].startswith("cutout_mask (tiny models")
    # And the invariant holds: every pixel is the garment as photographed or exactly white
    with Image.open(output.uri.removeprefix("file://")) as written:
        pixels = np.asarray(written.convert("RGB"))
    with Image.open(image.removeprefix("file://")) as photo:
        source = np.asarray(photo.convert("RGB"))
    garment = pixels == source
    white = pixels == 255
    assert (garment.all(axis=2) | white.all(axis=2)).all()
    assert garment.all(axis=2).sum() > 0.2 * garment.shape[0] * garment.shape[1]


def test_tiny_models_without_a_mask_say_the_models_are_tiny(tmp_path: Path, tiny_registry: ModelRegistry) -> None:
    # Given the same photo but no cutout mask, When it runs on tiny models
    image, _ = _photo_and_mask(tmp_path)
    with pytest.raises(JobInputError) as refused:
        ghost_mannequin.run(_request(tmp_path, {"image": image}), tiny_registry)
    # Then the reason says the models are tiny, and what real weights change
    assert refused.value.field == "inputs.image"
    assert "tiny random ones (--models tiny)" in str(refused.value)


def test_real_models_never_fall_back(tmp_path: Path) -> None:
    # Given weights that are not tiny, When the segmenter found no garment
    _, mask = _photo_and_mask(tmp_path)
    request = _request(tmp_path, {"image": mask, "mask": mask})
    real = SimpleNamespace(is_tiny=False)
    # Then "no garment" stays the answer: a cutout mask is garment and mannequin together
    with pytest.raises(JobInputError, match="no garment found"):
        ghost_mannequin._tiny_models_fallback(request, real, np.ones((128, 96), bool))  # type: ignore[arg-type]
