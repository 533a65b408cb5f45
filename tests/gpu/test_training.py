"""Brand LoRA training on tiny random models, CPU: what a brand's ML owner relies on.

One full run (UNet + text-encoder LoRA, pivotal tokens, masked loss, checkpoints, validation) is shared by the
module; the other tests check its outputs, interrupt and resume it, or stop bad input before any model loads.
"""

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import load_file

from functions.stages.training_runs import dataset_hash
from gpu_jobs import serve
from gpu_jobs.licences import LicenceError
from gpu_jobs.tiny_models import build_tiny_sdxl_components, tiny_tokenizer
from gpu_jobs.training.lora import (
    EMBEDDINGS_FILE,
    KOHYA_FILE,
    LORA_FILE,
    REPORT_FILE,
    TrainingInputError,
    complete_checkpoints,
    train_lora,
)
from schemas.dataset import DatasetManifest, DatasetPhoto, PhotoVerdict
from schemas.training import TrainingConfig, TrainingReport, training_config_to_hyperparameters

REPO_ROOT = Path(__file__).resolve().parents[2]
TRIGGER = "acmestyle"
# Everything on at once, so one short run covers every part of the trainer. No Min-SNR weighting here: it
# reweights each step by its random timestep, which hides a trend over six steps.
FULL = TrainingConfig(
    brand="acme",
    name="summer",
    trigger_token=TRIGGER,
    models="tiny",
    device="cpu",
    rank=4,
    alpha=8,
    train_text_encoder=True,
    pivotal_tuning=True,
    masked_loss=True,
    snr_gamma=None,
    noise_offset=0.05,
    learning_rate=1e-2,
    max_train_steps=6,
    checkpoint_every=3,
    validation_every=6,
    validation_prompts=(f"a {TRIGGER} red shirt",),
    validation_seeds=(0, 1),
    validation_inference_steps=2,
    seed=7,
)


def write_dataset(root: Path, count: int = 3) -> Path:
    """A dataset folder as the dataset check leaves it: kept 64 px photos in two buckets, captions, masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    photos = []
    for i in range(count):
        width, height = (64, 64) if i % 2 == 0 else (64, 48)
        pixels = np.full((height, width, 3), 210, np.uint8)
        box = (slice(height // 4, 3 * height // 4), slice(width // 4, 3 * width // 4))
        pixels[box] = (180, 30 + 40 * i, 40)
        Image.fromarray(pixels).save(root / f"images/p{i}.png")
        mask = np.zeros((height, width), np.uint8)
        mask[box] = 255
        Image.fromarray(mask).save(root / f"masks/p{i}.png")
        (root / f"images/p{i}.txt").write_text(f"a photo of {TRIGGER} red shirt, front {i}", encoding="utf-8")
        photos.append(
            DatasetPhoto(
                id=f"p{i}",
                source=f"photos/p{i}.jpg",
                verdict=PhotoVerdict.KEPT,
                width=width,
                height=height,
                bucket=(width, height),
                image_file=f"images/p{i}.png",
                caption_file=f"images/p{i}.txt",
                mask_file=f"masks/p{i}.png",
            )
        )
    photos.append(DatasetPhoto(id="blurry", source="photos/blurry.jpg", verdict=PhotoVerdict.REFUSED))
    manifest = DatasetManifest(
        brand="acme", trigger_token=TRIGGER, created_at=datetime.now(UTC), min_side=48, photos=tuple(photos)
    )
    (root / "dataset.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("training") / "dataset")


@pytest.fixture(scope="module")
def full_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingReport, Path]:
    output = tmp_path_factory.mktemp("full-run")
    return train_lora(FULL, dataset, output), output


def _pipeline() -> Any:
    """The tiny base the trainer started from, with its own second tokenizer (the tiny one shares a single one)."""
    from diffusers import StableDiffusionXLPipeline

    pipe: Any = StableDiffusionXLPipeline(**{**build_tiny_sdxl_components(seed=0), "tokenizer_2": tiny_tokenizer()})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(pipe: Any, prompt: str) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    result = pipe(prompt, width=64, height=64, num_inference_steps=2, generator=generator, output_type="np")
    return np.asarray(result.images[0])


def test_training_lowers_the_loss_and_writes_every_output(full_run: tuple[TrainingReport, Path], dataset: Path) -> None:
    # Given a full run of six steps
    report, output = full_run

    # Then the loss went down, and every promised file is there
    losses = [point.loss for point in report.loss_curve]
    assert [point.step for point in report.loss_curve] == [1, 2, 3, 4, 5, 6]
    assert sum(losses[3:]) < sum(losses[:3]), losses
    for name in (LORA_FILE, KOHYA_FILE, EMBEDDINGS_FILE, REPORT_FILE):
        assert (output / name).is_file(), name
    assert (output / "validation/step-6/grid.png").is_file()
    assert {Path(p).name for p in report.validation_images} == {"prompt-0-seed0.png", "prompt-0-seed1.png", "grid.png"}
    assert Image.open(output / "validation/step-6/grid.png").size == (2 * 64, 64)  # seeds across, prompts down
    assert report.checkpoints == ("checkpoint-3",) and (output / "checkpoints/checkpoint-3/checkpoint.json").is_file()

    # And training.json records the data, the base model and its licence, the settings, steps, time and device
    recorded = TrainingReport.model_validate_json((output / REPORT_FILE).read_text(encoding="utf-8"))
    assert recorded == report
    assert report.num_images == 3  # the refused photo is left out
    # (the same hash the training run keys its work on: schemas.dataset.dataset_digest)
    manifest = DatasetManifest.model_validate_json((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert report.dataset_sha256 == dataset_hash(dataset, manifest)
    assert report.buckets == {"64x48": 1, "64x64": 2}
    assert (report.base_model, report.base_model_licence, report.base_model_commercial_use) == (
        "tiny-sdxl",
        "apache-2.0",
        True,
    )
    assert report.config == FULL and report.steps_done == 6 and report.device.startswith("cpu")
    assert report.new_tokens == ("<s0>", "<s1>") and report.token_abstraction == TRIGGER
    assert report.wall_time_s > 0 and report.torch_version and report.diffusers_version


def test_the_adapter_loads_with_load_lora_weights_and_changes_the_image(full_run: tuple[TrainingReport, Path]) -> None:
    # Given the base pipeline and its image
    _, output = full_run
    pipe = _pipeline()
    before = _image(pipe, "a red shirt")

    # When the trained adapter (UNet and both text encoders) is loaded the diffusers way
    pipe.load_lora_weights(str(output / LORA_FILE), adapter_name="summer")

    # Then the same prompt and seed give another image, and switching the adapter off gives the base one back
    assert np.abs(_image(pipe, "a red shirt") - before).max() > 1e-3
    pipe.disable_lora()
    np.testing.assert_allclose(_image(pipe, "a red shirt"), before, atol=1e-5)
    keys = load_file(str(output / LORA_FILE)).keys()
    assert any(key.startswith("unet.") for key in keys) and any(key.startswith("text_encoder_2.") for key in keys)


def test_the_kohya_export_has_kohya_key_names(full_run: tuple[TrainingReport, Path]) -> None:
    _, output = full_run
    diffusers_state = load_file(str(output / LORA_FILE))
    kohya = load_file(str(output / KOHYA_FILE))

    assert all(key.startswith(("lora_unet_", "lora_te1_text_model_", "lora_te2_text_model_")) for key in kohya)
    assert all(key.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for key in kohya)
    downs = [key for key in kohya if key.endswith(".lora_down.weight")]
    assert len(downs) == len(diffusers_state) // 2  # one module per down/up pair
    # alpha/rank is folded into the weights, so every module says alpha = rank (4): one scale in every tool
    assert {float(kohya[key.replace(".lora_down.weight", ".alpha")]) for key in downs} == {4.0}


def test_the_pivotal_tokens_load_with_load_textual_inversion(full_run: tuple[TrainingReport, Path]) -> None:
    # Given the learned embeddings file: one row per new token for each text encoder
    report, output = full_run
    embeddings = load_file(str(output / EMBEDDINGS_FILE))
    assert set(embeddings) == {"clip_l", "clip_g"} and embeddings["clip_l"].shape == (2, 32)

    # When both are loaded the way the advanced script's model card says
    pipe = _pipeline()
    tokens = list(report.new_tokens)
    pipe.load_textual_inversion(
        embeddings["clip_l"], token=tokens, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        embeddings["clip_g"], token=tokens, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )

    # Then the prompt's new tokens look up exactly the learned rows
    for key, encoder, tokenizer in (
        ("clip_l", pipe.text_encoder, pipe.tokenizer),
        ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2),
    ):
        ids = tokenizer.convert_tokens_to_ids(tokens)
        torch.testing.assert_close(encoder.get_input_embeddings().weight[ids].detach(), embeddings[key])


def test_a_kill_9_halfway_resumes_from_the_last_checkpoint(
    dataset: Path, full_run: tuple[TrainingReport, Path], tmp_path: Path
) -> None:
    # Given the SageMaker entry point training in its own process, killed with SIGKILL after step 4
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps(training_config_to_hyperparameters(FULL)), encoding="utf-8")
    args = [
        "--hyperparameters",
        str(hyperparameters),
        "--train",
        str(dataset),
        "--model-dir",
        str(tmp_path / "model"),
        "--checkpoint-dir",
        str(tmp_path / "checkpoints"),
        "--output-data-dir",
        str(tmp_path / "output/data"),
        "--failure-file",
        str(tmp_path / "output/failure"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpu_jobs.training.sagemaker_train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("step 4/6"):
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "model" / LORA_FILE).exists()
    assert [step for step, _ in complete_checkpoints(tmp_path / "checkpoints")] == [3]

    # When the job is started again (as SageMaker restarts a spot job, with its checkpoint folder restored)
    from gpu_jobs.training.sagemaker_train import main

    assert main(args, environ={}) == 0

    # Then it continued from step 3 and ends exactly as the uninterrupted run: same loss curve, same weights
    uninterrupted, uninterrupted_output = full_run
    report = TrainingReport.model_validate_json((tmp_path / "model" / REPORT_FILE).read_text(encoding="utf-8"))
    assert report.resumed_from_step == 3
    assert [p.loss for p in report.loss_curve] == pytest.approx([p.loss for p in uninterrupted.loss_curve], abs=1e-6)
    resumed = load_file(str(tmp_path / "model" / LORA_FILE))
    for key, value in load_file(str(uninterrupted_output / LORA_FILE)).items():
        torch.testing.assert_close(resumed[key], value, atol=1e-6, rtol=0)


def test_fp16_on_cpu_is_refused_clearly(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"fp16.*CUDA GPU.*device is 'cpu'"):
        TrainingConfig(brand="acme", name="x", device="cpu", mixed_precision="fp16")
    if torch.cuda.is_available():
        pytest.skip("'auto' picks the GPU here")
    config = TrainingConfig(brand="acme", name="x", device="auto", mixed_precision="fp16")
    with pytest.raises(TrainingInputError, match="mixed_precision: 'fp16' needs a CUDA GPU"):
        train_lora(config, dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_commercial_brand_refuses_a_non_commercial_base(dataset: Path, tmp_path: Path) -> None:
    # Given a model config whose base model is licensed for non-commercial use only
    models = tmp_path / "model_config.json"
    base = {"name": "nc-sdxl", "source": "tiny", "licence": "cc-by-nc-4.0", "commercial_use": False}
    models.write_text(json.dumps({"commercial": False, "base": base}), encoding="utf-8")

    # When a commercial brand trains on it, then it is refused by name, before anything is written
    config = TrainingConfig(brand="acme", name="x", models=str(models), commercial=True, device="cpu")
    with pytest.raises(LicenceError, match=r"nc-sdxl.*cc-by-nc-4\.0"):
        train_lora(config, dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_caption_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset")
    (dataset / "images/p1.txt").write_bytes("a photo of acmestyle café shirt".encode("latin-1"))
    config = TrainingConfig(brand="acme", name="x", device="cpu")
    with pytest.raises(TrainingInputError, match=r"images/p1\.txt is not UTF-8"):
        train_lora(config, dataset, tmp_path / "out")


def test_the_container_train_command_trains_from_sagemaker_roots(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SageMaker's layout on temp folders: string hyperparameters, the dataset as the train channel
    config_dir = tmp_path / "input/config"
    config_dir.mkdir(parents=True)
    hyperparameters = {
        "brand": '"acme"',
        "name": "spring",
        "rank": "2",
        "max_train_steps": "2",
        "device": "cpu",
        "checkpoint_every": "1",
        "validation_every": "null",
        "validation_seeds": "0",
        "validation_inference_steps": "1",
        "sagemaker_job_name": '"x"',
    }
    (config_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters), encoding="utf-8")
    for name, value in {
        "SM_INPUT_CONFIG_DIR": config_dir,
        "SM_CHANNEL_TRAIN": dataset,
        "SM_MODEL_DIR": tmp_path / "model",
        "SM_CHECKPOINT_DIR": tmp_path / "checkpoints",
        "SM_OUTPUT_DATA_DIR": tmp_path / "output/data",
    }.items():
        monkeypatch.setenv(name, str(value))

    # When the container's entry point is given SageMaker's `train` command
    assert serve.main(["--host", "0.0.0.0", "train"]) == 0

    # Then the model dir holds the adapter and training.json, checkpoints went to the checkpoint dir
    report = TrainingReport.model_validate_json((tmp_path / "model" / REPORT_FILE).read_text(encoding="utf-8"))
    assert (tmp_path / "model" / LORA_FILE).is_file() and report.config.rank == 2 and report.steps_done == 2
    assert (tmp_path / "output/data" / REPORT_FILE).is_file()
    assert [step for step, _ in complete_checkpoints(tmp_path / "checkpoints")] == [1]
    assert not (tmp_path / "model/checkpoints").exists()

    # And a bad hyperparameter fails the job with its reason in the failure file
    hyperparameters["rank"] = '"sixteen"'
    (config_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters), encoding="utf-8")
    assert serve.main(["train"]) == 1
    assert "rank" in (tmp_path / "output/failure").read_text(encoding="utf-8")
