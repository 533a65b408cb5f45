"""The optional garment classifier: try-on names an unlabelled garment's category with it, or refuses saying why.

Tiny ONNX classifiers are exported in-process (tests/tiny_onnx.py): the linear layer's bias picks the class that
wins and by how much, so each test chooses what the classifier says.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from gpu_jobs.config import ModelConfig
from gpu_jobs.errors import JobInputError
from gpu_jobs.licences import LicenceError
from gpu_jobs.models import ModelRegistry
from gpu_jobs.recipes import try_on
from schemas import JobRequest
from tests.tiny_onnx import export_tiny_garment_classifier_onnx

LABELS = ["tops", "bottoms", "dresses", "outerwear"]
SIZE = [96, 128]


def _classifier(path: Path, winner: str, margin: float, **spec: Any) -> dict[str, Any]:
    export_tiny_garment_classifier_onnx(path, classes=len(LABELS), winner=LABELS.index(winner), margin=margin)
    return {
        "name": "tiny-garment-classifier",
        "source": str(path),
        "licence": "apache-2.0",
        "commercial_use": True,
        "labels": LABELS,
        "input_size": 32,
        **spec,
    }


def _request(tmp_path: Path, garment: str, category: str) -> JobRequest:
    return JobRequest.model_validate(
        {
            "job_id": "classify-job-0001",
            "kind": "try_on",
            "brand": "acme",
            "sku": "tee-1",
            "category": category,
            "inputs": {"garment": garment},
            "output_prefix": (tmp_path / "out").as_uri(),
            "params": {"steps": 2, "model_ids": ["default-a"], "default_model_size": SIZE},
            "seed": 1,
        }
    )


@pytest.fixture
def garment(tmp_path: Path) -> str:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((40, 60, 200, 255), (12, 8, 52, 60))
    path = tmp_path / "garment.png"
    image.save(path)
    return path.as_uri()


def _mask(uri: str) -> np.ndarray:
    with Image.open(uri.removeprefix("file://")) as image:
        return np.asarray(image) > 0


def test_an_unlabelled_garment_takes_the_classifiers_confident_category(
    tmp_path: Path, tiny_registry: ModelRegistry, garment: str
) -> None:
    # Given a deployment whose garment classifier is sure the garment is bottoms (~0.99)
    config = ModelConfig.tiny(garment_classifier=_classifier(tmp_path / "sure.onnx", "bottoms", 6.0))
    registry = ModelRegistry(config)
    # When try-on runs on a garment whose category is `other`
    result = try_on.run(_request(tmp_path / "classified", garment, "other"), registry)
    # Then it succeeds as bottoms, and each output says the category came from the classifier
    details = result.outputs[0].details
    assert details["region"] == "lower" and details["category"] == "bottoms"
    assert details["category_source"] == "classifier" and details["category_confidence"] > 0.95
    # And the agnostic region is exactly the one a run labelled bottoms repaints
    labelled = try_on.run(_request(tmp_path / "labelled", garment, "bottoms"), tiny_registry)
    assert "category_source" not in labelled.outputs[0].details
    assert np.array_equal(_mask(details["agnostic_mask_uri"]), _mask(labelled.outputs[0].details["agnostic_mask_uri"]))
    # And the session is built once and reused
    assert registry.garment_classifier() is registry.garment_classifier()


def test_an_unsure_classifier_refuses_naming_its_guess(tmp_path: Path, garment: str) -> None:
    # Given a classifier that leans to tops but only at ~0.41 (below the default 0.6)
    registry = ModelRegistry(ModelConfig.tiny(garment_classifier=_classifier(tmp_path / "unsure.onnx", "tops", 0.73)))
    # When try-on runs on an unlabelled garment, Then it refuses with how to fix it and what the classifier said
    with pytest.raises(JobInputError) as refused:
        try_on.run(_request(tmp_path, garment, "other"), registry)
    message = str(refused.value)
    assert refused.value.field == "category"
    assert 'Add "category" to the SKU\'s product.json or pass --category tops|bottoms|dresses|outerwear' in message
    assert "the garment classifier was unsure: tops 0.41" in message


def test_a_missing_classifier_file_fails_naming_the_field(tmp_path: Path) -> None:
    # Given a config pointing at an .onnx file that is not there, When it is validated, Then the error names it
    spec = {
        "name": "garments",
        "source": str(tmp_path / "absent.onnx"),
        "licence": "apache-2.0",
        "commercial_use": True,
        "labels": LABELS,
    }
    with pytest.raises(ValidationError, match=r"garment_classifier\.source"):
        ModelConfig.tiny(garment_classifier=spec)
    # And a label that is not a garment category names the labels field
    path = export_tiny_garment_classifier_onnx(tmp_path / "c.onnx")
    with pytest.raises(ValidationError, match=r"garment_classifier\.labels"):
        ModelConfig.tiny(garment_classifier={**spec, "source": str(path), "labels": ["tops", "hats"]})


def test_a_non_commercial_classifier_is_refused_by_a_commercial_deployment(tmp_path: Path, garment: str) -> None:
    # Given a commercial deployment configured with a classifier licensed for non-commercial use only
    spec = _classifier(tmp_path / "nc.onnx", "tops", 6.0, licence="cc-by-nc-4.0", commercial_use=False)
    registry = ModelRegistry(ModelConfig.tiny(commercial=True, garment_classifier=spec))
    # When try-on needs it, Then the licence gate refuses it
    with pytest.raises(LicenceError, match="does not allow commercial use"):
        try_on.run(_request(tmp_path, garment, "other"), registry)
    assert spec["name"] in [item.name for item in registry.config.specs()]
