"""Model loading from configuration: real `from_pretrained` on a local folder, shared pipelines."""

import json
from pathlib import Path

import numpy as np
import pytest

from gpu_jobs.config import ModelConfig
from gpu_jobs.models import ModelRegistry, resolve_dtype
from gpu_jobs.tiny_models import save_tiny_sdxl


def _text2img(registry: ModelRegistry) -> np.ndarray:
    pipe = registry.pipeline("text2img")
    return pipe(
        "a photo", height=64, width=64, num_inference_steps=2, generator=registry.generator(0), output_type="np"
    ).images[0]


def test_a_saved_model_folder_loads_through_the_config_path(tiny_registry, tmp_path: Path, monkeypatch) -> None:
    # Given tiny weights saved as a diffusers folder, and a config file naming it by a relative path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_tiny_sdxl(tmp_path / "weights" / "sdxl", seed=0)
    config_file = tmp_path / "weights" / "model_config.json"
    config_file.write_text(
        json.dumps(
            {
                "device": "cpu",
                "dtype": "float32",
                "base": {"name": "sdxl", "source": "./sdxl", "licence": "openrail++", "commercial_use": True},
            }
        )
    )
    # When the registry loads it through diffusers' from_pretrained
    config = ModelConfig.from_file(config_file)
    registry = ModelRegistry(config)
    # Then the path was resolved next to the config, and the weights are the ones saved: same images
    assert config.base.source == str((tmp_path / "weights" / "sdxl").resolve())
    assert not registry.is_tiny and registry.model_version == f"sdxl:{config.base.source}@local"
    tiny_registry.use_adapters(())  # other tests leave brand LoRAs active on the shared registry
    np.testing.assert_allclose(_text2img(registry), _text2img(tiny_registry), atol=1e-5)


def test_pipelines_share_one_set_of_weights(tiny_registry) -> None:
    text2img, img2img, inpaint = (tiny_registry.pipeline(task) for task in ("text2img", "img2img", "inpaint"))
    canny = tiny_registry.pipeline("inpaint", controlnet="canny")
    assert text2img.unet is img2img.unet is inpaint.unet is canny.unet
    assert text2img.vae is inpaint.vae and text2img.text_encoder_2 is canny.text_encoder_2
    assert tiny_registry.pipeline("inpaint") is inpaint  # cached


def test_missing_local_weights_fail_clearly(tmp_path: Path) -> None:
    config = ModelConfig.model_validate(
        {
            "device": "cpu",
            "base": {
                "name": "sdxl",
                "source": str(tmp_path / "absent"),
                "licence": "openrail++",
                "commercial_use": True,
            },
        }
    )
    with pytest.raises(FileNotFoundError, match="local weights not found"):
        ModelRegistry(config)


def test_device_and_dtype_choices_are_explicit() -> None:
    import torch

    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    with pytest.raises(RuntimeError, match="float16"):
        resolve_dtype("float16", torch.device("cpu"))


def test_cached_builds_once(tiny_registry) -> None:
    calls: list[int] = []
    first = tiny_registry.cached("test:thing", lambda: calls.append(1) or object())
    assert tiny_registry.cached("test:thing", lambda: calls.append(1) or object()) is first
    assert calls == [1]
