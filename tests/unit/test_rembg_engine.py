"""The rembg engine, run on tiny ONNX nets exported by the tests: no real weights, no network."""

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

# Skip (without importing them: rembg's package import is heavy) when the rembg extra is not installed.
for _needed in ("onnxruntime", "rembg", "torch", "pooch"):
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

import pooch  # noqa: E402

from functions.errors import BackgroundRemovalError, ConfigurationError  # noqa: E402
from functions.stages.background import rembg_engine  # noqa: E402
from functions.stages.background.rembg_engine import (  # noqa: E402
    DEFAULT_REMBG_MODEL,
    MODELS_DIR_ENV,
    NON_COMMERCIAL_MODELS,
    RembgRemover,
    default_models_dir,
)
from tests.conftest import REPO_ROOT  # noqa: E402
from tests.tiny_onnx import export_tiny_segmentation_onnx  # noqa: E402

# The tiny net calls dark pixels product; a dark rectangle on white is the stand-in garment.
DARK = (30, 30, 30)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_segmentation_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx", seed=0)


@pytest.fixture
def models_dir(tmp_path: Path, tiny_model: Path) -> Path:
    """A fresh models folder holding the tiny net under the default model's name."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / f"{DEFAULT_REMBG_MODEL}.onnx")
    return folder


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Records (and blocks) every download or socket connection; a test asserts the list stays empty."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def refuse_call(*args: Any, **kwargs: Any) -> None:
            attempts.append(f"{what}{args!r}")
            raise OSError(f"network access attempted: {what}")

        return refuse_call

    monkeypatch.setattr(pooch, "retrieve", refuse("pooch.retrieve"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    # rembg's own model folders are empty: had rembg looked there, it would have tried to download.
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty-u2net-home"))
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "empty-rembg-home"))
    return attempts


def product_photo(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """White backdrop with a dark rectangle (inclusive corners, as ImageDraw draws them)."""
    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).rectangle(box, fill=DARK)
    return image


def product_bbox(mask: Image.Image) -> tuple[int, int, int, int]:
    """Inclusive bounding box of the pixels the mask calls product (>= 0.5)."""
    ys, xs = np.nonzero(np.asarray(mask) >= 128)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@pytest.mark.parametrize("model", [DEFAULT_REMBG_MODEL, "isnet-general-use", "birefnet-general"])
def test_named_model_in_models_folder_is_used_without_any_download(
    model: str, models_dir: Path, tiny_model: Path, network_attempts: list[str]
) -> None:
    # Given a file named like the real model (so its checksum differs from rembg's release) in the folder
    shutil.copy(tiny_model, models_dir / f"{model}.onnx")

    # When the engine is built and run
    remover = RembgRemover(model, models_dir=models_dir)
    result = remover.remove(product_photo((400, 300), (150, 100, 249, 199)))

    # Then it used that file, with no download and no connection, and the mask follows the product
    assert network_attempts == []
    assert remover.engine == f"rembg:{model}"
    mask = np.asarray(result.mask)
    assert mask[150, 200] > 200 and mask[10, 10] < 50


def test_missing_model_is_a_clear_configuration_error_without_any_download(
    tmp_path: Path, network_attempts: list[str]
) -> None:
    # Given an empty models folder
    folder = tmp_path / "models"
    folder.mkdir()

    # When the default model is asked for without allowing a download
    with pytest.raises(ConfigurationError) as caught:
        RembgRemover(models_dir=folder)

    # Then the message names the model, the folder, the file expected there and the flag; nothing was fetched
    message = str(caught.value)
    assert repr(DEFAULT_REMBG_MODEL) in message
    assert str(folder.resolve()) in message
    assert str(folder.resolve() / f"{DEFAULT_REMBG_MODEL}.onnx") in message
    assert "--allow-download" in message
    assert network_attempts == []


def test_models_folder_defaults_to_the_environment_then_the_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, network_attempts: list[str]
) -> None:
    # Given no CATALOG_MODELS_DIR, the folder is under the user's cache
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_models_dir() == tmp_path / "home" / ".cache" / "catalog" / "models"

    # When CATALOG_MODELS_DIR is set, a remover with no models_dir looks there
    configured = tmp_path / "configured-models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(configured))
    assert default_models_dir() == configured
    with pytest.raises(ConfigurationError, match=str(configured)):
        RembgRemover("u2netp")


def test_allow_download_lets_rembg_fetch_into_the_models_folder_with_its_checksum(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path
) -> None:
    # Given an empty models folder and a stand-in for rembg's downloader
    folder = tmp_path / "models"
    folder.mkdir()
    downloads: list[dict[str, Any]] = []

    def fake_retrieve(url: str, known_hash: str | None, **kwargs: Any) -> str:
        downloads.append({"url": url, "known_hash": known_hash, **kwargs})
        target = Path(kwargs["path"]) / kwargs["fname"]
        shutil.copy(tiny_model, target)
        return str(target)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)

    # When a missing model is asked for with downloads allowed
    remover = RembgRemover("u2netp", models_dir=folder, allow_download=True)

    # Then rembg fetched it once, checksum-verified, into the folder under the name looked up next time
    assert len(downloads) == 1
    assert downloads[0]["known_hash"] and downloads[0]["known_hash"].startswith("md5:")
    assert Path(downloads[0]["path"]) == folder.resolve()
    assert (folder / "u2netp.onnx").is_file()
    assert remover.remove(product_photo((300, 300), (100, 100, 199, 199))).mask.size == (300, 300)

    # And a later run without the flag finds it there
    assert RembgRemover("u2netp", models_dir=folder).engine == "rembg:u2netp"


def test_failed_download_is_a_configuration_error_naming_the_file(tmp_path: Path, network_attempts: list[str]) -> None:
    # Given downloads are allowed but the network is not there
    folder = tmp_path / "models"

    # When the missing model is asked for
    with pytest.raises(ConfigurationError, match="could not fetch") as caught:
        RembgRemover("u2netp", models_dir=folder, allow_download=True)

    # Then rembg tried once, and the message says which file to put where
    assert len(network_attempts) == 1
    assert str(folder.resolve() / "u2netp.onnx") in str(caught.value)


def test_model_given_by_onnx_path_outside_any_rembg_folder(
    tmp_path: Path, tiny_model: Path, network_attempts: list[str]
) -> None:
    # Given a model file in an arbitrary folder (rembg's own u2net_custom refuses paths outside its home)
    model_file = tmp_path / "elsewhere" / "my-segmenter.onnx"
    model_file.parent.mkdir()
    shutil.copy(tiny_model, model_file)

    # When it is given by path, as a string or a Path
    for model in (str(model_file), model_file):
        remover = RembgRemover(model)
        result = remover.remove(product_photo((320, 240), (100, 60, 219, 179)))

        # Then it runs, recorded by the file's name
        assert remover.engine == "rembg:my-segmenter.onnx"
        assert result.engine == "rembg:my-segmenter.onnx"
        assert product_bbox(result.mask) == pytest.approx((100, 60, 219, 179), abs=3)
    assert network_attempts == []


def test_missing_onnx_path_and_unknown_name_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        RembgRemover(tmp_path / "nowhere.onnx")
    with pytest.raises(ConfigurationError, match=r"Unknown rembg model 'u3net'.*isnet-general-use"):
        RembgRemover("u3net", models_dir=tmp_path)


def test_one_onnxruntime_session_per_model_per_process(
    monkeypatch: pytest.MonkeyPatch, models_dir: Path, tiny_model: Path
) -> None:
    # Given a count of the onnxruntime sessions created
    import onnxruntime

    created: list[str] = []
    real_session = onnxruntime.InferenceSession

    def counting_session(path: str, *args: Any, **kwargs: Any) -> Any:
        created.append(path)
        return real_session(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting_session)
    shutil.copy(tiny_model, models_dir / "birefnet-general.onnx")
    photo = product_photo((200, 200), (50, 50, 149, 149))

    # When several removers for the same model are built and used
    first = RembgRemover(models_dir=models_dir)
    second = RembgRemover(DEFAULT_REMBG_MODEL, models_dir=models_dir)
    first.remove(photo)
    second.remove(photo)

    # Then one session served them; another model gets its own
    assert created == [str(models_dir.resolve() / f"{DEFAULT_REMBG_MODEL}.onnx")]
    RembgRemover("birefnet-general", models_dir=models_dir)
    assert len(created) == 2


def test_threads_are_passed_to_onnxruntime(models_dir: Path) -> None:
    # When a process-pool worker asks for one thread per session
    remover = RembgRemover(models_dir=models_dir, threads=1)

    # Then onnxruntime runs with one intra-op thread
    options = remover._session.inner_session.get_session_options()
    assert options.intra_op_num_threads == 1
    with pytest.raises(ValueError, match="threads"):
        RembgRemover(models_dir=models_dir, threads=0)


@pytest.mark.parametrize("model", sorted(NON_COMMERCIAL_MODELS))
def test_commercial_use_refuses_non_commercial_models(model: str, models_dir: Path, tiny_model: Path) -> None:
    # Given the non-commercial model's file is present, by name and by path
    shutil.copy(tiny_model, models_dir / f"{model}.onnx")
    renamed = models_dir / f"{model}-2.0.onnx"
    shutil.copy(tiny_model, renamed)

    # When commercial use is configured (the default), it is refused with the reason
    for requested in (model, renamed):
        with pytest.raises(ConfigurationError, match="non-commercial") as caught:
            RembgRemover(requested, models_dir=models_dir)
        assert "--allow-non-commercial" in str(caught.value)

    # And accepted when the use is declared non-commercial
    assert RembgRemover(model, models_dir=models_dir, commercial=False).engine == f"rembg:{model}"


@pytest.mark.parametrize(
    ("size", "box"),
    [
        ((333, 517), (40, 300, 199, 459)),  # odd size, product off-centre
        ((517, 333), (300, 20, 489, 139)),
        ((4100, 3001), (600, 900, 2599, 2399)),  # large: reduced before the net, mask scaled back
    ],
)
def test_mask_is_mode_l_at_the_input_size_and_aligned_with_the_product(
    size: tuple[int, int], box: tuple[int, int, int, int], models_dir: Path
) -> None:
    # Given a product photo of an odd size
    photo = product_photo(size, box)

    # When its background is removed
    result = RembgRemover(models_dir=models_dir).remove(photo)

    # Then the mask is 8-bit, the photo's own size, and covers the product where it is
    assert result.mask.mode == "L"
    assert result.mask.size == photo.size
    tolerance = 3 * max(1, -(-max(size) // 2048))
    assert product_bbox(result.mask) == pytest.approx(box, abs=tolerance)
    assert not result.low_confidence


def test_transparent_pixels_of_an_rgba_image_are_background(models_dir: Path) -> None:
    # Given an RGBA image whose colour is black everywhere, opaque only over the product
    photo = Image.new("RGBA", (333, 257), (0, 0, 0, 0))
    ImageDraw.Draw(photo).rectangle((90, 70, 229, 189), fill=(*DARK, 255))

    # When its background is removed
    result = RembgRemover(models_dir=models_dir).remove(photo)

    # Then the transparent area is background and the opaque one product
    mask = np.asarray(result.mask)
    alpha = np.asarray(photo.getchannel("A"))
    assert result.mask.size == photo.size
    assert mask[alpha == 0].max() == 0
    assert product_bbox(result.mask) == pytest.approx((90, 70, 229, 189), abs=3)


def test_decisive_mask_is_confident_and_undecided_one_is_flagged(models_dir: Path) -> None:
    # (IS-Net's 1024 px input keeps the tiny net's ramp response wide, so the mask stays undecided)
    shutil.copy(models_dir / f"{DEFAULT_REMBG_MODEL}.onnx", models_dir / "isnet-general-use.onnx")
    remover = RembgRemover("isnet-general-use", models_dir=models_dir)

    # Given a sharp product on white, and a smooth black-to-white ramp with no edge to cut along
    sharp = remover.remove(product_photo((400, 300), (120, 80, 279, 219)))
    ramp = remover.remove(Image.linear_gradient("L").resize((400, 300)).convert("RGB"))

    # Then the sharp one is confident and the ramp is low confidence with a note saying why
    assert sharp.confidence > 0.9 and not sharp.low_confidence and sharp.notes == ()
    # (plain Python types: results are serialised into sidecars and reports)
    assert type(sharp.confidence) is float and type(ramp.low_confidence) is bool
    assert ramp.low_confidence and ramp.confidence < sharp.confidence
    assert any("neither clearly product nor clearly background" in note for note in ramp.notes)


@pytest.mark.parametrize(
    "photo",
    [
        Image.new("RGB", (300, 200), (255, 255, 255)),  # nothing at all: the net's output is flat
        product_photo((300, 200), (150, 100, 151, 101)),  # a speck of dust
    ],
    ids=["blank", "speck"],
)
def test_essentially_empty_mask_is_no_product_found(photo: Image.Image, models_dir: Path) -> None:
    with pytest.raises(BackgroundRemovalError) as caught:
        RembgRemover(models_dir=models_dir).remove(photo)
    assert caught.value.code == "no_product_found"


def test_other_image_modes_are_refused(models_dir: Path) -> None:
    with pytest.raises(ValueError, match="RGB or RGBA"):
        RembgRemover(models_dir=models_dir).remove(Image.new("L", (50, 50)))


def test_missing_rembg_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    # Given rembg cannot be imported
    monkeypatch.setitem(sys.modules, "rembg", None)
    monkeypatch.setitem(sys.modules, "rembg.sessions", None)
    monkeypatch.setattr(rembg_engine, "_REGISTRY", None)

    # Then building the engine tells how to install it
    with pytest.raises(ConfigurationError, match=r"pip install 'catalog-image-processor\[rembg\]'"):
        RembgRemover(models_dir=models_dir)


def test_importing_the_engine_imports_neither_rembg_nor_onnxruntime(tiny_model: Path) -> None:
    # Given a fresh interpreter, as a light Lambda would be
    script = f"""
import json, sys
import functions.stages.background.rembg_engine as engine
after_import = sorted(m for m in ("rembg", "onnxruntime", "pymatting") if m in sys.modules)
engine.RembgRemover({str(tiny_model)!r})
after_build = sorted(m for m in ("onnxruntime", "pymatting", "numba") if m in sys.modules)
print(json.dumps({{"after_import": after_import, "after_build": after_build}}))
"""
    # When the engine module is imported, then used
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])

    # Then nothing heavy came with the import; building loads onnxruntime but not rembg's matting stack
    assert loaded["after_import"] == []
    assert loaded["after_build"] == ["onnxruntime"]
