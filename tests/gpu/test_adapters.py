"""Brand LoRAs: loaded by name from URIs, switched per request, mixed by weight, the base never reloaded."""

from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws

from gpu_jobs.models import ModelRegistry
from gpu_jobs.tiny_models import write_tiny_lora
from gpu_jobs.worker import JobRunner
from schemas import AdapterRef, JobRequest

from .conftest import CANVAS, job_request_dict, load_rgb, write_cutout


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {
        name: write_tiny_lora(folder / f"{name}.safetensors", seed=seed)
        for name, seed in (("summer", 1), ("winter", 2))
    }


def _scene(registry: ModelRegistry, tmp_path: Path, name: str, adapters: list[dict]) -> np.ndarray:
    """One seeded lifestyle job with these adapters in the brand profile; returns the image."""
    request = JobRequest.model_validate(
        job_request_dict(
            "lifestyle",
            {"cutout": write_cutout(tmp_path / "cutout.png").as_uri()},
            tmp_path / name,
            seed=9,
            params={
                "width": CANVAS,
                "height": CANVAS,
                "steps": 2,
                "brand_profile": {"brand": "acme", "adapters": adapters},
            },
        )
    )
    result = JobRunner(registry).execute(request)
    assert result.status == "succeeded"
    return load_rgb(result.outputs[0].uri)


def test_switching_adapters_changes_the_scene_and_switching_back_restores_it(tiny_registry, loras, tmp_path) -> None:
    unet_before = tiny_registry.pipeline("inpaint").unet
    summer = {"name": "summer", "uri": loras["summer"].as_uri()}
    winter = {"name": "winter", "uri": loras["winter"].as_uri()}
    # Given scenes with no adapter, with summer, with winter
    plain = _scene(tiny_registry, tmp_path, "plain", [])
    with_summer = _scene(tiny_registry, tmp_path, "summer", [summer])
    with_winter = _scene(tiny_registry, tmp_path, "winter", [winter])
    # Then each adapter changes the output
    assert not np.array_equal(plain, with_summer)
    assert not np.array_equal(with_summer, with_winter)
    # And switching back restores each output exactly
    assert np.array_equal(_scene(tiny_registry, tmp_path, "summer2", [summer]), with_summer)
    assert np.array_equal(_scene(tiny_registry, tmp_path, "plain2", []), plain)
    # And the base was never reloaded: every pipeline still shares the same UNet object
    assert tiny_registry.pipeline("inpaint").unet is unet_before is tiny_registry.pipeline("text2img").unet


def test_adapters_mix_by_weight_and_report_versions(tiny_registry, loras, tmp_path) -> None:
    summer = {"name": "summer", "uri": loras["summer"].as_uri()}
    winter = {"name": "winter", "uri": loras["winter"].as_uri(), "version": "v7"}
    # Given two adapters mixed with different weights
    mostly_summer = _scene(tiny_registry, tmp_path, "a", [{**summer, "weight": 1.0}, {**winter, "weight": 0.3}])
    mostly_winter = _scene(tiny_registry, tmp_path, "b", [{**summer, "weight": 0.3}, {**winter, "weight": 1.0}])
    summer_only = _scene(tiny_registry, tmp_path, "c", [summer])
    # Then the weights matter, and a mix is not either adapter alone
    assert not np.array_equal(mostly_summer, mostly_winter)
    assert not np.array_equal(mostly_summer, summer_only)
    # And the versions come back: the declared one, or the weights' digest
    versions = tiny_registry.use_adapters([AdapterRef.model_validate(summer), AdapterRef.model_validate(winter)])
    assert versions["winter"] == "v7" and versions["summer"].startswith("sha256-")


def test_two_stores_same_version_name_different_weights_each_apply_their_own(tiny_registry, loras, tmp_path) -> None:
    # Given two brand stores that each registered an `ss27@v1`, with different weights, served by one worker
    first = {"name": "ss27", "uri": loras["summer"].as_uri(), "version": "ss27@v1"}
    second = {"name": "ss27", "uri": loras["winter"].as_uri(), "version": "ss27@v1"}
    # When a job uses the first, then one uses the second
    with_first = _scene(tiny_registry, tmp_path, "first", [first])
    with_second = _scene(tiny_registry, tmp_path, "second", [second])
    # Then both run, each with its own weights, and the first still gives its own scene afterwards
    assert not np.array_equal(with_first, with_second)
    assert np.array_equal(_scene(tiny_registry, tmp_path, "first-again", [first]), with_first)


def test_adapter_from_s3_is_downloaded_once_to_the_cache(tiny_registry, loras, tmp_path) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="brand-models")
        s3.put_object(Bucket="brand-models", Key="acme/summer.safetensors", Body=loras["summer"].read_bytes())
        # Given the same LoRA served from S3 under another name
        from_s3 = _scene(
            tiny_registry, tmp_path, "s3", [{"name": "summer_s3", "uri": "s3://brand-models/acme/summer.safetensors"}]
        )
    from_file = _scene(tiny_registry, tmp_path, "file", [{"name": "summer", "uri": loras["summer"].as_uri()}])
    # Then it has the same effect as the local file, and sits in the LoRA cache
    assert np.array_equal(from_s3, from_file)
    assert list(tiny_registry.config.lora_cache_dir.rglob("summer.safetensors"))


def test_a_missing_adapter_is_the_callers_error(invoke, tmp_path) -> None:
    params = {
        "width": CANVAS,
        "height": CANVAS,
        "steps": 2,
        "brand_profile": {
            "brand": "acme",
            "adapters": [{"name": "gone", "uri": (tmp_path / "gone.safetensors").as_uri()}],
        },
    }
    status, body = invoke(
        job_request_dict(
            "lifestyle", {"cutout": write_cutout(tmp_path / "c.png").as_uri()}, tmp_path / "o", params=params
        )
    )
    assert status == 422 and body["error"]["field"] == "brand_profile.adapters.gone.uri"
