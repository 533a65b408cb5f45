"""The NSFW classifier `catalog compare --nsfw-model` reads: a local image-classification folder, never downloaded."""

from pathlib import Path

import pytest
from PIL import Image

from gpu_jobs.embeddings import EmbeddingModelError, NsfwClassifier


def test_a_saved_classifier_folder_scores_the_probability_of_its_unsafe_label(tmp_path: Path) -> None:
    # Given a classifier with labels normal/nsfw saved to a local folder
    tiny = NsfwClassifier.load("tiny")
    tiny.model.save_pretrained(tmp_path / "nsfw")
    tiny.processor.save_pretrained(tmp_path / "nsfw")

    # When it is loaded from the folder and scores an image
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    loaded = NsfwClassifier.load(str(tmp_path / "nsfw"))

    # Then the score is a probability, the same as the model it was saved from, named by the folder
    score = loaded.unsafe_probability(image)
    assert 0.0 < score < 1.0 and score == pytest.approx(tiny.unsafe_probability(image), abs=1e-6)
    assert loaded.name == "nsfw"


def test_a_classifier_without_an_unsafe_label_or_a_missing_folder_is_refused(tmp_path: Path) -> None:
    # Given a classifier whose labels name nothing unsafe
    tiny = NsfwClassifier.load("tiny")
    tiny.model.config.id2label = {0: "cat", 1: "dog"}
    tiny.model.config.label2id = {"cat": 0, "dog": 1}
    tiny.model.save_pretrained(tmp_path / "pets")
    tiny.processor.save_pretrained(tmp_path / "pets")

    # Then loading it says which labels it has; and a folder that is not there is named, never downloaded
    with pytest.raises(EmbeddingModelError, match=r"pets: none of the classifier's labels \['cat', 'dog'\]"):
        NsfwClassifier.load(str(tmp_path / "pets"))
    with pytest.raises(EmbeddingModelError, match="never downloaded"):
        NsfwClassifier.load(str(tmp_path / "missing"))
