"""The dataset check's optional captioning model (`--captioner`): a local BLIP folder, never downloaded, here a tiny
random one built in the test; its words follow the template caption."""

from pathlib import Path

import pytest

from functions.errors import ConfigurationError
from functions.local.synthetic_photos import render_product_photo
from functions.stages.dataset import load_captioner, with_description


def _tiny_blip(folder: Path, words: list[str]) -> None:
    """A random BLIP captioner a few KiB large, with its own word list: weights that exist only in this test."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"), bos_token="[CLS]")
    image_processor = transformers.BlipImageProcessor(size={"height": 32, "width": 32})
    transformers.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    text = {"vocab_size": len(words) + 5, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    text |= {"intermediate_size": 37, "max_position_embeddings": 64, "bos_token_id": 2, "sep_token_id": 3}
    vision = {"hidden_size": 32, "image_size": 32, "patch_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = transformers.BlipConfig(
        text_config={**text, "pad_token_id": 0}, vision_config={**vision, "intermediate_size": 37}, projection_dim=32
    )
    transformers.BlipForConditionalGeneration(config).save_pretrained(folder)


def test_a_local_blip_folder_loads_offline_and_describes_a_photo_in_its_own_words(tmp_path):
    # Given a local BLIP captioning model folder (tiny and random: its words are noise, the mechanics are real)
    words = ["silk", "cotton", "folded", "flat", "studio"]
    _tiny_blip(tmp_path / "blip", words)
    photo = render_product_photo("dress", (118, 140, 112), (242, 222, 222), size=(96, 128), seed=4).image
    # When it is loaded the way `--captioner` loads it (local files only) and shown a photo
    described = load_captioner(tmp_path / "blip", max_new_tokens=6)(photo)
    # Then it answers with words only that model knows, which follow the template's caption
    assert described and set(described.split()) <= set(words)
    assert with_description("sks, Slip dress", f"  {described}\n") == f"sks, Slip dress, {described}"


def test_a_folder_that_is_not_a_captioning_model_is_refused_before_any_work(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    with pytest.raises(ConfigurationError, match="is not a BLIP captioning model folder"):
        load_captioner(tmp_path / "notes")
