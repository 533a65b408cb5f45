"""Time brand LoRA training: steps/s and peak memory, and on a GPU side by side with diffusers' own SDXL LoRA script.

    python bench/bench_training.py                      # CPU, tiny models: steps/s and peak RSS of train_lora
    python bench/bench_training.py --diffusers-script DIFFUSERS/examples/dreambooth/train_dreambooth_lora_sdxl.py
                                                        # CUDA: SDXL-size random weights at 1024², rank 16, bf16:
                                                        # s/step and peak GB of ours and of the script, same run

No weights are downloaded. On a GPU the SDXL base architecture is built with random weights (speed does not
depend on the values; `bench_lifestyle_gpu.build_sdxl_components`), saved once to a temp folder, and both trainers
load it from there: same images (1024², one bucket), same prompt, rank 16, bf16, batch 1, Min-SNR 5, no gradient
checkpointing, no validation. Each trainer runs in its own process under the same harness: a global optimiser
step hook (`torch.optim.optimizer.register_optimizer_step_post_hook`) synchronises the device and timestamps every
step, and reads `torch.cuda.max_memory_allocated` (CPU: the process's peak RSS). s/step is the median step
interval after the warm-up steps. The goal: at least 1.5x the script's throughput at no more memory.

Without a CUDA device the comparison is not run, and the script says so; the CPU figures are for tiny models.
"""

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Runs a trainer (ours through the SageMaker entry point, or diffusers' script) with the step hook; prints one
# JSON line. Ours and theirs are timed by the very same code.
HARNESS = r"""
import json, runpy, sys, time
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

cuda = torch.cuda.is_available()
record = {"times": [], "peak_bytes": 0}

def on_step(optimizer, args, kwargs):
    if cuda:
        torch.cuda.synchronize()
        record["peak_bytes"] = max(record["peak_bytes"], torch.cuda.max_memory_allocated())
    record["times"].append(time.perf_counter())

register_optimizer_step_post_hook(on_step)
target, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if target == "ours":
        from gpu_jobs.training.sagemaker_train import main
        code = main(sys.argv[1:])
        if code:
            raise SystemExit(code)
    else:
        runpy.run_path(target, run_name="__main__")
finally:
    print("BENCH_RESULT " + json.dumps(record), flush=True)
"""


def run_harness(target: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one trainer under the harness in a fresh process: its step times and peak memory."""
    process = subprocess.run(
        [sys.executable, "-c", HARNESS, target, *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if process.returncode != 0 or not lines:
        tail = (process.stderr or process.stdout)[-3000:]
        raise RuntimeError(f"{target} failed (exit {process.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    return result


def seconds_per_step(times: list[float], warmup: int) -> float:
    intervals = [later - earlier for earlier, later in itertools.pairwise(times)][warmup:]
    if not intervals:
        raise RuntimeError(f"only {len(times)} steps timed; raise --steps above the warm-up ({warmup})")
    return statistics.median(intervals)


def write_dataset(folder: Path, count: int, size: int, caption: str) -> Path:
    """A dataset folder as the dataset check writes it (schemas/dataset.py), plus the same photos as a flat folder
    of images for diffusers' script (`--instance_data_dir`)."""
    from datetime import UTC, datetime

    import numpy as np
    from PIL import Image

    from schemas.dataset import DatasetManifest, DatasetPhoto, PhotoVerdict

    (folder / "images").mkdir(parents=True)
    (folder / "instance").mkdir()
    rng = np.random.default_rng(0)
    photos = []
    for i in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"images/p{i}.png")
        Image.fromarray(pixels).save(folder / f"instance/p{i}.png")
        (folder / f"images/p{i}.txt").write_text(caption, encoding="utf-8")
        photos.append(
            DatasetPhoto(
                id=f"p{i}",
                source=f"p{i}.png",
                verdict=PhotoVerdict.KEPT,
                width=size,
                height=size,
                bucket=(size, size),
                image_file=f"images/p{i}.png",
                caption_file=f"images/p{i}.txt",
            )
        )
    manifest = DatasetManifest(brand="bench", created_at=datetime.now(UTC), min_side=size, photos=tuple(photos))
    (folder / "dataset.json").write_text(manifest.model_dump_json(), encoding="utf-8")
    return folder


def ours_args(work: Path, dataset: Path, hyperparameters: dict[str, Any]) -> list[str]:
    from schemas.training import TrainingConfig, training_config_to_hyperparameters

    config = TrainingConfig.model_validate(hyperparameters)
    (work / "hyperparameters.json").write_text(json.dumps(training_config_to_hyperparameters(config)))
    return [
        "--hyperparameters", str(work / "hyperparameters.json"), "--train", str(dataset),
        "--model-dir", str(work / "ours"), "--checkpoint-dir", str(work / "ours-checkpoints"),
        "--output-data-dir", str(work / "ours-output/data"), "--failure-file", str(work / "ours-output/failure"),
    ]  # fmt: skip


def bench_cpu(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    dataset = write_dataset(work / "dataset", args.images, args.size, "a photo of acmestyle shirt")
    settings = {
        "brand": "bench", "name": "cpu", "models": "tiny", "device": "cpu", "rank": 4,
        "max_train_steps": args.steps, "checkpoint_every": 10**6, "validation_every": None,
        "validation_inference_steps": 1, "validation_seeds": [0], "validation_size": 64,
    }  # fmt: skip
    result = run_harness("ours", ours_args(work, dataset, settings), env)
    per_step = seconds_per_step(result["times"], args.warmup)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    threads = env.get("OMP_NUM_THREADS", "torch's default")
    print(f"CPU, tiny random SDXL, {args.size}² px, rank 4, fp32, batch 1, {args.steps} steps")
    print(f"  {os.cpu_count()} cores, OMP_NUM_THREADS={threads}, load average {load} (other work slows this)")
    print(
        f"  train_lora: {1 / per_step:.2f} steps/s ({per_step * 1000:.0f} ms/step), "
        f"peak RSS {result['peak_rss_gb']:.2f} GB"
    )


def bench_gpu(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from bench_lifestyle_gpu import build_sdxl_components  # the real SDXL shapes, random weights
    from diffusers import StableDiffusionXLPipeline

    base = work / "sdxl-random"
    pipe: Any = StableDiffusionXLPipeline(**build_sdxl_components(torch.device("cuda"), torch.float32))
    pipe.save_pretrained(base)
    del pipe
    torch.cuda.empty_cache()  # each trainer runs in its own process; this one only wrote the weights
    spec = {"name": "sdxl-random", "source": str(base), "licence": "openrail++", "commercial_use": True}
    (work / "model_config.json").write_text(json.dumps({"base": spec}))
    caption = "a photo of sks shirt"
    dataset = write_dataset(work / "dataset", args.images, args.size, caption)
    settings = {
        "brand": "bench", "name": "gpu", "models": str(work / "model_config.json"), "device": "cuda",
        "rank": args.rank, "mixed_precision": "bf16", "max_train_steps": args.steps, "learning_rate": 1e-4,
        "snr_gamma": 5.0, "checkpoint_every": 10**6, "validation_every": None, "validation_inference_steps": 1,
        "validation_seeds": [0], "validation_size": 256,
    }  # fmt: skip
    theirs = [
        "--pretrained_model_name_or_path", str(base), "--instance_data_dir", str(dataset / "instance"),
        "--instance_prompt", caption, "--resolution", str(args.size), "--rank", str(args.rank),
        "--mixed_precision", "bf16", "--train_batch_size", "1", "--learning_rate", "1e-4",
        "--max_train_steps", str(args.steps), "--checkpointing_steps", str(10**6), "--snr_gamma", "5.0",
        "--seed", "0", "--output_dir", str(work / "theirs"),
    ]  # fmt: skip
    results = {
        "train_lora (ours)": run_harness("ours", ours_args(work, dataset, settings), env),
        "train_dreambooth_lora_sdxl.py": run_harness(str(args.diffusers_script), theirs, env),
    }
    print(
        f"{torch.cuda.get_device_name()}: SDXL-size random weights, {args.size}² px, rank {args.rank}, bf16, batch 1,"
    )
    print(f"{args.steps} steps ({args.warmup} warm-up steps not counted), no gradient checkpointing")
    figures = {name: (seconds_per_step(r["times"], args.warmup), r["peak_bytes"] / 1e9) for name, r in results.items()}
    for name, (per_step, peak) in figures.items():
        print(f"  {name:32s} {per_step:.3f} s/step   peak {peak:.1f} GB")
    (ours_step, ours_peak), (their_step, their_peak) = figures.values()
    print(f"  throughput ratio (theirs s/step / ours): {their_step / ours_step:.2f}x (goal >= 1.5x); "
          f"peak memory ours/theirs: {ours_peak / their_peak:.2f} (goal <= 1.00)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--diffusers-script", type=Path, help="diffusers' examples/dreambooth/train_dreambooth_lora_sdxl.py"
    )
    parser.add_argument("--steps", type=int, default=None, help="default: 30 on a GPU, 20 on CPU")
    parser.add_argument("--warmup", type=int, default=None, help="steps not counted (default: 5 GPU, 3 CPU)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="default: 1024 on a GPU, 128 on CPU")
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()

    import torch

    gpu = torch.cuda.is_available()
    args.steps = args.steps or (30 if gpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 3)
    args.size = args.size or (1024 if gpu else 128)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as temp:
        work = Path(temp)
        if not gpu:
            print(
                "No CUDA GPU is available: the GPU comparison with diffusers' "
                "train_dreambooth_lora_sdxl.py was NOT run."
            )
            bench_cpu(args, work, env)
            return 0
        if args.diffusers_script is None or not args.diffusers_script.is_file():
            parser.error("on a GPU, pass --diffusers-script: the path of diffusers' train_dreambooth_lora_sdxl.py")
        bench_gpu(args, work, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
