"""Pivotal-tuning embeddings at inference (`ti:` in `catalog compare`): a version's `learned_embeds.safetensors` is
loaded into both text encoders under tokens of its own, the trigger word in the prompt becomes those tokens, and the
image changes; without the embeddings, the same LoRA leaves the trigger word as plain text."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpu_jobs.errors import JobInputError
from gpu_jobs.models import ModelRegistry
from gpu_jobs.tiny_models import TINY_TEXT_HIDDEN, write_tiny_lora
from schemas import AdapterRef

PROMPT = "acmestyle, a linen shirt on a terrace"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core runner two OpenMP threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_embeddings(path: Path, rows: int = 2, seed: int = 5) -> Path:
    generator = torch.Generator().manual_seed(seed)
    save_file(
        {
            "clip_l": torch.randn(rows, TINY_TEXT_HIDDEN, generator=generator),
            "clip_g": torch.randn(rows, TINY_TEXT_HIDDEN, generator=generator),
        },
        str(path),
    )
    return path


def render(registry: ModelRegistry, prompt: str) -> np.ndarray:
    pipe = registry.pipeline("text2img")
    image = pipe(
        prompt=registry.with_embedding_tokens(prompt),
        width=64,
        height=64,
        num_inference_steps=2,
        generator=registry.generator(0),
    ).images[0]
    return np.asarray(image)


def test_the_trigger_word_becomes_the_versions_tokens_and_changes_the_image(
    tiny_registry: ModelRegistry, tmp_path: Path
) -> None:
    lora = write_tiny_lora(tmp_path / "lora.safetensors", seed=3)
    embeddings = write_embeddings(tmp_path / "learned_embeds.safetensors")
    plain = AdapterRef(name="ss27", uri=lora.as_uri(), version="ss27@v4")
    with_ti = plain.model_copy(update={"embeddings_uri": embeddings.as_uri(), "embeddings_token": "acmestyle"})

    # Given the LoRA alone
    tiny_registry.use_adapters([plain])
    assert tiny_registry.with_embedding_tokens(PROMPT) == PROMPT
    lora_only = render(tiny_registry, PROMPT)

    # When its embeddings are on
    tiny_registry.use_adapters([with_ti])

    # Then the trigger word is the version's own tokens, one per embedding row, and the image differs
    assert tiny_registry.with_embedding_tokens(PROMPT) == "<ss27_ss27_v4_0><ss27_ss27_v4_1>, a linen shirt on a terrace"
    assert tiny_registry.with_embedding_tokens("acmestyles") == "acmestyles"  # a longer word is not the trigger
    with_embeddings = render(tiny_registry, PROMPT)
    assert not np.array_equal(lora_only, with_embeddings)

    # And switching the adapters off leaves the prompt alone again (the tokens stay loaded, unused)
    tiny_registry.use_adapters([])
    assert tiny_registry.with_embedding_tokens(PROMPT) == PROMPT


def test_embeddings_in_the_wrong_shape_are_refused_naming_the_field(tiny_registry: ModelRegistry, tmp_path: Path):
    lora = write_tiny_lora(tmp_path / "lora.safetensors", seed=3)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"emb_params": torch.zeros(2, TINY_TEXT_HIDDEN)}, str(wrong))
    ref = AdapterRef(
        name="ss27", uri=lora.as_uri(), version="ss27@v9", embeddings_uri=wrong.as_uri(), embeddings_token="acmestyle"
    )
    with pytest.raises(JobInputError, match="expected clip_l and clip_g") as refused:
        tiny_registry.use_adapters([ref])
    assert refused.value.field == "brand_profile.adapters.ss27.embeddings_uri"
    tiny_registry.use_adapters([])
