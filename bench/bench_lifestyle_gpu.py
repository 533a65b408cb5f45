"""Time the lifestyle recipe against the stock SDXL inpaint pipeline, on random weights of the real architecture.

    python bench/bench_lifestyle_gpu.py                 # CUDA: real SDXL base shapes, 1024x1024, 30 steps, CFG
    python bench/bench_lifestyle_gpu.py --compile       # + torch.compile of the UNet (slow first call)
    python bench/bench_lifestyle_gpu.py --scaled-down   # CPU: tiny shapes, 128x128, 4 steps: proves the script runs

No weights are downloaded: the SDXL base UNet/VAE/text encoders are built from the configs below with
random weights (the speed of a network does not depend on its weight values). Both paths get the
same weights; the stock pipeline runs in float16 with diffusers' defaults (SDPA attention, CFG
batched), the recipe in bfloat16 through the ModelRegistry (channels_last, fused QKV, optional
compile). Printed: seconds per image, the ratio, and the share of bf16 peak reached in the
denoising loop (FLOPs of one CFG step counted with torch's FlopCounterMode; ~13.5 TFLOP at 1024).
"""

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpu_jobs.config import ModelConfig  # noqa: E402
from gpu_jobs.models import ModelRegistry  # noqa: E402
from gpu_jobs.recipes import lifestyle  # noqa: E402
from gpu_jobs.tiny_models import build_tiny_sdxl_components, tiny_tokenizer  # noqa: E402
from schemas import JobRequest  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}
NOMINAL_TFLOP_PER_CFG_STEP = 13.5  # SDXL UNet at 1024x1024, batch 2 (uncond + cond)

# stabilityai/stable-diffusion-xl-base-1.0 configs (unet/config.json, vae/config.json, text encoders).
SDXL_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
SDXL_VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
    norm_num_groups=32,
)
CLIP_L: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
CLIP_BIG_G: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)


def build_sdxl_components(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The SDXL base architecture with random weights, built directly on `device`."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):
        unet: Any = UNet2DConditionModel(**SDXL_UNET)
        vae: Any = AutoencoderKL(**SDXL_VAE)
        text_encoder: Any = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        text_encoder_2: Any = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIG_G))
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.to(dtype).eval()
        # Random weights at full scale overflow half precision within a few layers; shrink them so the
        # activations stay finite (speed does not depend on the values).
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.mul_(0.05)
    tokenizer = tiny_tokenizer()  # ids stay below 49408; the text encoders' cost does not depend on them
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": scheduler,
    }


class StepClock:
    """A `callback_on_step_end` that timestamps each denoising step (after a device synchronize)."""

    def __init__(self, device: torch.device, inner: Any = None) -> None:
        self.device, self.inner = device, inner
        self.stamps: list[float] = []

    def __call__(self, pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())
        return self.inner(pipe, step, timestep, kwargs) if self.inner is not None else kwargs

    def seconds_per_step(self) -> float:
        intervals = np.diff(self.stamps)
        return float(np.median(intervals)) if len(intervals) else float("nan")


def flops_per_cfg_step(unet: Any, size: int, device: torch.device, dtype: torch.dtype) -> float:
    """FLOPs of one UNet call on a CFG batch (2 latents), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    config = unet.config
    latent = size // 8 if config.sample_size >= 64 else size // 2
    text_width = config.cross_attention_dim
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    inputs = dict(
        sample=torch.randn(2, 4, latent, latent, device=device, dtype=dtype),
        timestep=torch.tensor(500, device=device),
        encoder_hidden_states=torch.randn(2, 77, text_width, device=device, dtype=dtype),
        added_cond_kwargs={
            "text_embeds": torch.randn(2, pooled, device=device, dtype=dtype),
            "time_ids": torch.zeros(2, 6, device=device, dtype=dtype),
        },
    )
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(**inputs)
    return float(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(folder: Path, size: int) -> tuple[Path, Image.Image, Image.Image]:
    """A product cutout file, plus the same product on a canvas and its inpaint mask for the stock pipeline."""
    rng = np.random.default_rng(0)
    h, w = size // 2, size // 3
    pixels = np.zeros((h, w, 4), dtype=np.uint8)
    pixels[..., :3] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pixels[..., 3] = 255
    cutout = folder / "cutout.png"
    Image.fromarray(pixels).save(cutout)
    canvas = Image.new("RGB", (size, size), (127, 127, 127))
    mask = Image.new("L", (size, size), 255)
    canvas.paste(Image.fromarray(pixels[..., :3]), ((size - w) // 2, size - h - size // 16))
    mask.paste(0, ((size - w) // 2, size - h - size // 16, (size - w) // 2 + w, size - size // 16))
    return cutout, canvas, mask


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scaled-down", action="store_true", help="CPU, tiny shapes, 128x128, 4 steps")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per path, after one warm-up run")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet in the recipe's registry")
    parser.add_argument("--skip-stock", action="store_true")
    args = parser.parse_args()

    scaled = args.scaled_down
    size = args.size or (128 if scaled else 1024)
    steps = args.steps or (4 if scaled else 30)  # strength 0.99 runs steps - 1 of them; >= 2 to time a step
    if scaled:
        device, stock_dtype, ours_dtype = torch.device("cpu"), torch.float32, torch.float32
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --scaled-down on CPU", file=sys.stderr)
            return 2
        device, stock_dtype, ours_dtype = torch.device("cuda"), torch.float16, torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None) if not scaled else None
    print(f"device: {name}; {size}x{size}, {steps} steps, CFG 5.0, {args.runs} timed runs after 1 warm-up")

    # Random weights: the SDXL base architecture, or the tiny one when scaled down.
    def components(dtype: torch.dtype) -> dict[str, Any]:
        if scaled:
            parts = build_tiny_sdxl_components(seed=0)
            for key in ("unet", "vae", "text_encoder", "text_encoder_2"):
                parts[key].to(device, dtype)
            return parts
        return build_sdxl_components(device, dtype)

    base = components(stock_dtype)
    flops = flops_per_cfg_step(base["unet"], size, device, stock_dtype)
    print(
        f"UNet FLOPs per CFG step (counted): {flops / 1e12:.3f} TFLOP"
        + ("" if scaled else f" (nominal {NOMINAL_TFLOP_PER_CFG_STEP})")
    )

    folder = Path(tempfile.mkdtemp(prefix="bench-lifestyle-"))
    cutout, canvas, mask = make_inputs(folder, size)
    results: dict[str, tuple[float, float]] = {}

    # Stock: StableDiffusionXLInpaintPipeline, fp16 on CUDA (fp32 on CPU), diffusers' defaults.
    if not args.skip_stock:
        from diffusers import StableDiffusionXLInpaintPipeline

        stock: Any = StableDiffusionXLInpaintPipeline(**base)
        stock.set_progress_bar_config(disable=True)
        per_image, per_step = [], []
        for run in range(args.runs + 1):
            clock = StepClock(device)
            synchronize(device)
            started = time.perf_counter()
            stock(
                prompt="a lifestyle photo",
                negative_prompt="blurry",
                image=canvas,
                mask_image=mask,
                width=size,
                height=size,
                num_inference_steps=steps,
                guidance_scale=5.0,
                strength=0.99,
                generator=torch.Generator("cpu").manual_seed(run),
                callback_on_step_end=clock,
                output_type="pil",
            )
            synchronize(device)
            if run:  # run 0 is the warm-up
                per_image.append(time.perf_counter() - started)
                per_step.append(clock.seconds_per_step())
        results["stock"] = (statistics.median(per_image), statistics.median(per_step))
        del stock
    ours_parts = (
        base
        if ours_dtype == stock_dtype
        else {
            key: (copy.deepcopy(value).to(ours_dtype) if hasattr(value, "parameters") else value)
            for key, value in base.items()
        }
    )
    if ours_parts is not base:
        del base
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # Ours: the lifestyle recipe through the ModelRegistry (bf16, channels_last, fused QKV, optional compile).
    config = ModelConfig.tiny(
        base={"name": "sdxl-random", "source": "random-weights", "licence": "openrail++", "commercial_use": True},
        device=device.type,
        dtype="float32" if ours_dtype == torch.float32 else "bfloat16",
        optimise=True,
        compile_unet=args.compile,
        default_size=size,
        default_steps=steps,
        job_timeout_s=3600,
    )
    registry = ModelRegistry(config, components=ours_parts)
    per_image, per_step = [], []
    for run in range(args.runs + 1):
        clock = StepClock(device, inner=ModelRegistry.step_callback.__get__(registry))
        registry.step_callback = clock  # type: ignore[method-assign,assignment]
        request = JobRequest(
            job_id=f"bench-{run:04d}",
            kind="lifestyle",
            brand="bench",
            sku="sku-1",
            inputs={"cutout": cutout.as_uri()},
            output_prefix=(folder / f"out{run}").as_uri(),
            seed=run,
            params={"width": size, "height": size, "steps": steps, "guidance_scale": 5.0},
        )
        registry.begin_job()
        synchronize(device)
        started = time.perf_counter()
        result = lifestyle.run(request, registry)
        synchronize(device)
        registry.end_job()
        assert result.status == "succeeded"
        if run:
            per_image.append(time.perf_counter() - started)
            per_step.append(clock.seconds_per_step())
    results["lifestyle"] = (statistics.median(per_image), statistics.median(per_step))

    print(f"{'path':<12}{'s/image':>10}{'s/step':>10}{'TFLOP/s':>10}{'% bf16 peak':>13}")
    for path, (seconds, step_seconds) in results.items():
        achieved = flops / step_seconds / 1e12
        share = f"{100 * achieved / peak:.1f}%" if peak else "n/a"
        print(f"{path:<12}{seconds:>10.3f}{step_seconds:>10.4f}{achieved:>10.2f}{share:>13}")
    if "stock" in results:
        print(f"speed-up (stock s/image / lifestyle s/image): {results['stock'][0] / results['lifestyle'][0]:.2f}x")
    if scaled:
        print("scaled down on CPU: tiny random models, so the figures prove the script runs, not GPU speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
