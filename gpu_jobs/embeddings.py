"""Embedding metrics for `catalog compare`: prompt adherence (CLIP-T) and similarity to the brand's photos (CLIP-I).

The model is a CLIP folder the user configured (`CLIPModel` + its processor, e.g. a copy of
openai/clip-vit-base-patch32), read with `local_files_only=True`: it is never downloaded. `"tiny"` builds a tiny
random CLIP in-process (tests, `--models tiny` demos): its numbers exercise the plumbing and mean nothing.

    scorer = ClipScorer.load("/models/clip-vit-base-patch32", brand_photos=[...])  # or ClipScorer.load("tiny")
    scorer.prompt_adherence(image, "a linen shirt on a terrace")   # 100 x cosine(image, text), CLIPScore-style
    scorer.brand_similarity(image)                                  # mean cosine with the brand photos, or None
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

TINY = "tiny"


class EmbeddingModelError(ValueError):
    """The configured embedding model cannot be loaded; the message names the folder and the reason."""


class ClipScorer:
    """A CLIP model and processor on CPU (or CUDA when present), float32, no gradients."""

    def __init__(self, model: Any, processor: Any, name: str, brand_photos: Sequence[Image.Image] = ()) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.name = name
        self._brand = self._image_embeddings(list(brand_photos)) if brand_photos else None

    @classmethod
    def load(cls, source: str, brand_photos: Sequence[Path] = ()) -> ClipScorer:
        """A local CLIP folder, or "tiny"; `brand_photos` are the brand's training photos (CLIP-I)."""
        # 1. load the model and processor, from the local folder only
        if source == TINY:
            model, processor, name = *_tiny_clip(), "tiny-random-clip"
        else:
            from transformers import CLIPModel, CLIPProcessor

            folder = Path(source)
            if not folder.is_dir():
                raise EmbeddingModelError(f"{source}: not a folder with a CLIP model (weights are never downloaded)")
            try:
                model = CLIPModel.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
                processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as error:
                raise EmbeddingModelError(f"{source}: cannot load a CLIP model ({type(error).__name__})") from error
            name = folder.name
        # 2. the brand's photos, embedded once
        photos = []
        for path in brand_photos:
            with Image.open(path) as photo:
                photos.append(photo.convert("RGB"))
        return cls(model, processor, name, photos)

    @torch.no_grad()
    def _image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        features = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        features = getattr(features, "pooler_output", features)
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def _text_embedding(self, text: str) -> torch.Tensor:
        inputs = self.processor(text=[text], return_tensors="pt", padding=True, truncation=True)
        features = self.model.get_text_features(
            input_ids=inputs["input_ids"].to(self.device), attention_mask=inputs["attention_mask"].to(self.device)
        )
        features = getattr(features, "pooler_output", features)
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def prompt_adherence(self, image: Image.Image, prompt: str) -> float:
        """CLIP-T: 100 x the cosine of the image and prompt embeddings (CLIPScore without its clamp)."""
        return float(100.0 * (self._image_embeddings([image]) @ self._text_embedding(prompt).T).item())

    def brand_similarity(self, image: Image.Image) -> float | None:
        """CLIP-I: the mean cosine of the image's embedding with the brand photos' (None without photos)."""
        if self._brand is None:
            return None
        return float((self._image_embeddings([image]) @ self._brand.T).mean().item())


def _tiny_clip() -> tuple[Any, Any]:
    """A tiny random CLIP (32-wide, 32 px images) and a processor over the tiny tokenizer; nothing downloaded."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    try:  # transformers 5 names the Pillow-only processor apart (the default one wants torchvision)
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor  # type: ignore[assignment]

    from .tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


UNSAFE_LABELS = ("nsfw", "unsafe", "porn", "hentai", "sexy", "explicit")


class NsfwClassifier:
    """An image classifier the user configured (a transformers image-classification folder, e.g. a copy of a ViT NSFW
    detector), read with `local_files_only=True`; its score is the probability of its unsafe labels."""

    def __init__(self, model: Any, processor: Any, name: str) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.name = name
        labels = {int(index): str(label) for index, label in model.config.id2label.items()}
        self._unsafe = [index for index, label in labels.items() if label.lower() in UNSAFE_LABELS]
        if not self._unsafe:
            raise EmbeddingModelError(
                f"{name}: none of the classifier's labels {sorted(labels.values())} is one of {list(UNSAFE_LABELS)}"
            )

    @classmethod
    def load(cls, source: str) -> NsfwClassifier:
        """A local image-classification folder, or "tiny" (random, labels normal/nsfw: plumbing only)."""
        if source == TINY:
            return cls(*_tiny_nsfw_classifier(), "tiny-random-nsfw")
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        folder = Path(source)
        if not folder.is_dir():
            raise EmbeddingModelError(f"{source}: not a folder with an image classifier (weights are never downloaded)")
        try:
            model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as error:
            raise EmbeddingModelError(f"{source}: cannot load an image classifier ({type(error).__name__})") from error
        return cls(model, processor, folder.name)

    @torch.no_grad()
    def unsafe_probability(self, image: Image.Image) -> float:
        inputs = self.processor(images=[image.convert("RGB")], return_tensors="pt")
        logits = self.model(pixel_values=inputs["pixel_values"].to(self.device)).logits.float()
        return float(logits.softmax(dim=-1)[0, self._unsafe].sum().item())


def _tiny_nsfw_classifier() -> tuple[Any, Any]:
    """A tiny random ViT classifier (32 px, labels normal/nsfw) and its Pillow processor; nothing downloaded."""
    from transformers import ViTConfig, ViTForImageClassification

    try:  # transformers 5 names the Pillow-only processor apart (the default one wants torchvision)
        from transformers import ViTImageProcessorPil as ViTImageProcessor
    except ImportError:
        from transformers import ViTImageProcessor  # type: ignore[assignment]

    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )
    torch.manual_seed(0)
    return ViTForImageClassification(config), ViTImageProcessor(size={"height": 32, "width": 32})
