"""An optional ONNX garment classifier: names the category of a garment image whose SKU names none.

    classifier = registry.garment_classifier()      # None when the model config has no `garment_classifier`
    guess = classifier.classify(garment_image)       # Classification(category=tops, confidence=0.93)

The net takes one `1x3xSxS` float32 input ((rgb/255 - mean)/std, transparent pixels on white) and gives `1xC`
logits whose classes are the spec's `labels`; the probabilities are their softmax.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from schemas import GarmentCategory

from .config import GarmentClassifierSpec


class GarmentClassifierError(RuntimeError):
    """The configured classifier does not fit its spec (output shape not matching `labels`)."""


@dataclass(frozen=True)
class Classification:
    """The classifier's top class and its probability."""

    category: GarmentCategory
    confidence: float

    def describe(self) -> str:
        return f"{self.category.value} {self.confidence:.2f}"


class GarmentClassifier:
    """An onnxruntime session over the spec's `.onnx` file (CUDA when asked and present, else CPU)."""

    def __init__(self, spec: GarmentClassifierSpec, device: Literal["cpu", "cuda"] = "cpu") -> None:
        import onnxruntime as ort

        self.spec = spec
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(spec.source, providers=providers)
        self._input_name = self._session.get_inputs()[0].name

    def probabilities(self, image: Image.Image) -> np.ndarray:
        """Softmax over the net's logits, one per label."""
        spec = self.spec
        rgb = _on_white(image).resize((spec.input_size, spec.input_size), Image.Resampling.BILINEAR)
        mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
        tensor = (np.asarray(rgb, np.float32) / np.float32(255.0) - mean) / std
        tensor = np.ascontiguousarray(tensor.transpose(2, 0, 1)[None], dtype=np.float32)
        logits = np.asarray(self._session.run(None, {self._input_name: tensor})[0], dtype=np.float64)
        if logits.shape != (1, len(spec.labels)):
            raise GarmentClassifierError(
                f"garment classifier '{spec.name}' gives output shape {logits.shape}, but {len(spec.labels)} "
                f"labels are configured (garment_classifier.labels)"
            )
        shifted = np.exp(logits[0] - logits[0].max())
        return np.asarray(shifted / shifted.sum())

    def classify(self, image: Image.Image) -> Classification:
        """The most probable category and its probability."""
        probabilities = self.probabilities(image)
        best = int(probabilities.argmax())
        return Classification(category=self.spec.labels[best], confidence=float(probabilities[best]))


def _on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
        flat.alpha_composite(image.convert("RGBA"))
        return flat.convert("RGB")
    return image.convert("RGB")
