"""Segmentation for the garment recipes: backdrop key, tiny ONNX nets, agnostic masks, the default library."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_jobs.config import SegmenterSpec
from gpu_jobs.model_library import DEFAULT_MODEL_IDS, FIGURE_TONES, default_model_library, draw_default_model
from gpu_jobs.segmentation import (
    OnnxSegmenter,
    OnnxSegmenterSettings,
    SegmentationError,
    backdrop_foreground,
    settings_from_spec,
)
from gpu_jobs.tiny_segmenters import TinySegmenters, build_tiny_segmenters

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinySegmenters:
    return build_tiny_segmenters(tmp_path_factory.mktemp("segmenters"))


def _tone_mask(image: Image.Image, label: str) -> np.ndarray:
    return (np.asarray(image) == FIGURE_TONES[label]).all(axis=2)


def test_backdrop_key_keeps_a_backdrop_coloured_patch_inside_the_product() -> None:
    # Given a dark square on a light backdrop, with a backdrop-coloured patch in its middle
    image = Image.new("RGB", (80, 60), (238, 238, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 15, 59, 44], fill=(40, 60, 90))
    draw.rectangle([35, 25, 44, 34], fill=(238, 238, 236))
    # When the backdrop is keyed
    foreground = backdrop_foreground(image)
    # Then the square, patch included, is foreground and the frame is not
    assert foreground[15:45, 20:60].all()
    assert foreground.sum() == 40 * 30
    assert not foreground[0].any()


def test_categories_give_different_agnostic_masks_that_spare_the_face(tiny: TinySegmenters) -> None:
    # Given a default-library figure parsed by the tiny human parser
    figure = draw_default_model("default-b", (96, 128))
    labels = tiny.parser.parse(figure)
    # When agnostic masks are made for each region
    masks = {region: tiny.parser.agnostic_mask(labels, region) for region in ("upper", "lower", "full")}
    # Then the upper mask covers the top, the lower one the trousers, the full one both; none touches the face
    top, trousers, face = (_tone_mask(figure, name) for name in ("upper_clothes", "pants", "face"))
    assert masks["upper"][top].mean() > 0.95 and masks["upper"][trousers].mean() < 0.2
    assert masks["lower"][trousers].mean() > 0.95 and masks["lower"][top].mean() < 0.2
    assert masks["full"][top].mean() > 0.95 and masks["full"][trousers].mean() > 0.95
    for mask in masks.values():
        assert not mask[face].any()
    assert np.nonzero(masks["upper"])[0].mean() < np.nonzero(masks["lower"])[0].mean()


def test_mask_limbs_adds_the_arms_to_an_upper_mask(tiny: TinySegmenters) -> None:
    # Given a parsed figure
    figure = draw_default_model("default-b", (96, 128))
    labels = tiny.parser.parse(figure)
    arms = _tone_mask(figure, "left_arm")
    # When limbs are allowed to change
    plain = tiny.parser.agnostic_mask(labels, "upper")
    with_limbs = tiny.parser.agnostic_mask(labels, "upper", mask_limbs=True)
    # Then the arms (hands included) join the mask only then
    assert with_limbs[arms].mean() > 0.95
    assert plain[arms].mean() < 0.5


def test_clothes_segmenter_separates_a_coloured_garment_from_a_grey_mannequin(tiny: TinySegmenters) -> None:
    # Given a red garment over a grey form on a light backdrop
    image = Image.new("RGB", (64, 64), (240, 240, 238))
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 5, 44, 60], fill=(150, 150, 150))
    draw.rectangle([16, 20, 48, 50], fill=(200, 60, 60))
    # When it is segmented
    garment = tiny.clothes.garment_mask(image)
    # Then exactly the red pixels are garment
    expected = (np.asarray(image) == (200, 60, 60)).all(axis=2)
    assert (garment == expected).mean() > 0.99


def test_a_label_list_that_does_not_match_the_net_is_refused(tiny: TinySegmenters) -> None:
    # Given the tiny parser's file configured with three labels instead of eighteen
    settings = OnnxSegmenterSettings(path=tiny.parser.net.settings.path, labels=("background", "top", "face"))
    # When it runs, then the error names both counts
    with pytest.raises(SegmentationError, match="18 channels but 3 labels"):
        OnnxSegmenter(settings).label_map(Image.new("RGB", (32, 32)))


def test_segmenter_labels_with_gaps_are_refused() -> None:
    spec = SegmenterSpec(
        name="clothes", source="/models/clothes.onnx", licence="mit", commercial_use=True, labels={"bg": 0, "top": 2}
    )
    with pytest.raises(SegmentationError, match="without gaps"):
        settings_from_spec(spec, "cpu")


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SegmentationError, match="not found"):
        OnnxSegmenter(OnnxSegmenterSettings(path=tmp_path / "none.onnx", labels=("a", "b")))


def test_default_library_is_written_once_and_deterministic(tmp_path: Path) -> None:
    # Given the default library written twice into different folders
    first = default_model_library(tmp_path / "a", size=(96, 128))
    second = default_model_library(tmp_path / "b", size=(96, 128))
    # Then both hold the same figures, pixel for pixel, one per id
    assert [photo.model_id for photo in first] == list(DEFAULT_MODEL_IDS)
    for one, two in zip(first, second, strict=True):
        assert np.array_equal(np.asarray(Image.open(one.uri[7:])), np.asarray(Image.open(two.uri[7:])))
    # And the poses differ from one another
    images = [np.asarray(Image.open(photo.uri[7:])) for photo in first]
    assert not np.array_equal(images[0], images[1])


@pytest.mark.samples
@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is not here")
def test_backdrop_key_finds_the_garment_on_real_studio_photos() -> None:
    # Given the real garment photos (light studio backdrops; one is a white top on white)
    shares = {}
    for path in sorted(SAMPLES.glob("0*.jpg")):
        with Image.open(path) as image:
            foreground = backdrop_foreground(image.convert("RGB"))
        shares[path.name] = foreground.mean()
        # Then the corners are backdrop on every photo
        assert not foreground[:5, :5].any() and not foreground[-5:, -5:].any(), path.name
    # And every garment but the white-on-white one is a plausible share of the frame: a colour key cannot see
    # white on white, which is why the ghost mannequin recipe takes the garment from the clothes segmenter
    plausible = [name for name, share in shares.items() if 0.1 < share < 0.9]
    assert len(plausible) >= len(shares) - 1, shares
