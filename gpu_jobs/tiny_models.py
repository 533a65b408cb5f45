"""Tiny random SDXL parts, built in-process: for tests and `--models tiny`. Nothing is downloaded.

The shapes fit together like SDXL's (two CLIP text encoders whose hidden sizes add up to the UNet's
cross-attention width, `text_time` added embeddings, a ControlNet built from the UNet), so every
diffusers SDXL pipeline runs on them; the images they make are noise by design.

    from gpu_jobs.tiny_models import build_tiny_sdxl_pipeline, build_tiny_controlnet, write_tiny_lora

    pipe = build_tiny_sdxl_pipeline(seed=0)                   # StableDiffusionXLPipeline, CPU float32
    image = pipe("a photo", height=64, width=64, num_inference_steps=2).images[0]
    controlnet = build_tiny_controlnet(pipe.unet, seed=1)
    lora_file = write_tiny_lora(tmp_path / "summer.safetensors", seed=3)   # lora_B random: it has an effect

The VAE downsamples by 2 (not 8), so canvases should be multiples of 16.
"""

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TINY_NOTE = "tiny random models: the image is noise by design"
TINY_TEXT_HIDDEN = 32
# What the UNet's attention layers are called: LoRAs target these.
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")

_TOKENIZER_DIR: Path | None = None


def write_tiny_tokenizer(folder: Path) -> Path:
    """Write a byte-level CLIP vocab (every printable ASCII character, alone and as a word end) and no merges."""
    folder.mkdir(parents=True, exist_ok=True)
    characters = [chr(code) for code in range(33, 127)]
    tokens = characters + [f"{c}</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
    # A merges file needs its version line; a lone `</w>` merge would be refused, so there are none.
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer over the tiny vocab, written once per process to a temp folder."""
    global _TOKENIZER_DIR
    if _TOKENIZER_DIR is None:
        _TOKENIZER_DIR = write_tiny_tokenizer(Path(tempfile.mkdtemp(prefix="tiny-clip-tokenizer-")))
    return CLIPTokenizer(str(_TOKENIZER_DIR / "vocab.json"), str(_TOKENIZER_DIR / "merges.txt"), model_max_length=77)


def tiny_unet_config() -> dict[str, Any]:
    return {
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "transformer_layers_per_block": (1, 2),
        # 6 time ids x 8 + the pooled text embedding of the second encoder (32).
        "projection_class_embeddings_input_dim": 6 * 8 + TINY_TEXT_HIDDEN,
        "cross_attention_dim": 2 * TINY_TEXT_HIDDEN,
        "norm_num_groups": 1,
    }


def _tiny_text_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=TINY_TEXT_HIDDEN,
    )


def build_tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """UNet, VAE, both text encoders and tokenizers, and a scheduler: the kwargs of an SDXL pipeline."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet: Any = UNet2DConditionModel(**tiny_unet_config())
        vae: Any = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            sample_size=128,
            norm_num_groups=32,
        )
        text_encoder = CLIPTextModel(_tiny_text_config())
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_text_config())
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    tokenizer = tiny_tokenizer()
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": scheduler,
    }


def build_tiny_sdxl_pipeline(seed: int = 0) -> Any:
    """A text-to-image SDXL pipeline (`StableDiffusionXLPipeline`) over tiny random weights (CPU, float32)."""
    return StableDiffusionXLPipeline(**build_tiny_sdxl_components(seed))


def build_tiny_controlnet(unet: Any = None, seed: int = 0) -> Any:
    """A ControlNet copied from `unet` (default: a fresh tiny UNet), conditioning sized for the tiny VAE's 2x.

    Pass a UNet without LoRA layers: `from_unet` copies its state dict, and peft's wrapped layers do not fit.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if unet is None:
            unet = UNet2DConditionModel(**tiny_unet_config())
        controlnet: Any = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        # from_unet zero-initialises the output convolutions; give them small random weights so that
        # the control image has a visible effect in tests.
        for module in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
            torch.nn.init.normal_(module.weight, std=0.02)
    return controlnet.eval()


def save_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """`save_pretrained` a tiny SDXL pipeline to `folder`, so loaders can be tested on a real layout."""
    build_tiny_sdxl_pipeline(seed).save_pretrained(str(folder))
    return folder


def write_tiny_lora(path: Path, seed: int = 0, rank: int = 4, scale: float = 0.5) -> Path:
    """Write a UNet LoRA for the tiny UNet in diffusers' format (one .safetensors file) and return its path.

    peft initialises lora_B to zero, which makes an adapter that changes nothing; lora_B is drawn
    at random here (std `scale`) so that loading the adapter changes the images.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lora_unet: Any = UNet2DConditionModel(**tiny_unet_config())
        lora_unet.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGET_MODULES), init_lora_weights="gaussian")
        )
        state = get_peft_model_state_dict(lora_unet)
        state = {
            key: torch.randn_like(value) * scale if "lora_B" in key else value.clone() for key, value in state.items()
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        str(path.parent), unet_lora_layers=convert_state_dict_to_diffusers(state), weight_name=path.name
    )
    return path
