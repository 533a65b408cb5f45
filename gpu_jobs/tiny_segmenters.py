"""Tiny ONNX segmentation nets for tests and `--models tiny`: a clothes segmenter and a human parser.

They are random nets with one deliberate rule each, so their masks follow the picture instead of being noise:
- the clothes segmenter calls saturated pixels garment (a grey or white mannequin and a light backdrop are not);
- the human parser labels each pixel by the nearest of 18 prototype colours, those of the default model
  library's figures (`model_library.FIGURE_TONES`), so it parses those figures sensibly and nothing else.
A small seeded random convolutional path only jitters the scores. Exported with torch (`dynamo=False`); torch is
imported only when a net is exported.
"""

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from .model_library import FIGURE_TONES
from .segmentation import (
    DEFAULT_HUMAN_PARSING_LABELS,
    ClothesSegmenter,
    HumanParser,
    OnnxSegmenterSettings,
)

CLOTHES_LABELS = ("background", "garment")
_CHROMA_THRESHOLD = 0.12  # max(rgb) - min(rgb) in [0, 1] above which a pixel is garment
_CHROMA_GAIN = 40.0
_PROTOTYPE_GAIN = 200.0  # on squared RGB distance in [0, 1]^3: face and arm skin tones are ~0.012 apart
_RANDOM_PATH_SCALE = 0.1
# Labels the default figures do not use get far-off colours nobody draws with.
_UNUSED_LABEL_TONES = {
    "hat": (255, 0, 255),
    "sunglasses": (0, 255, 255),
    "skirt": (255, 128, 0),
    "dress": (128, 0, 255),
    "belt": (0, 255, 0),
    "right_shoe": (20, 20, 20),  # same as left_shoe: both shoes are "shoe" to the parser
    "left_leg": (255, 255, 0),
    "right_leg": (255, 255, 0),
    "right_arm": FIGURE_TONES["left_arm"],
    "bag": (255, 0, 0),
    "scarf": (0, 0, 255),
}


def _prototype_tones() -> list[tuple[int, int, int]]:
    tones = {**_UNUSED_LABEL_TONES, **FIGURE_TONES}
    return [tones[name] for name in DEFAULT_HUMAN_PARSING_LABELS]


def _export(net: "object", path: Path, output_channels: int) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(1, 3, 64, 64)
    with warnings.catch_warnings():
        # dynamo=False is deliberate: the TorchScript exporter is quick for nets this small and needs nothing more.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            net,  # type: ignore[arg-type]
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes={"image": {2: "height", 3: "width"}, "scores": {2: "height", 3: "width"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def _random_path(seed: int, out_channels: int) -> "object":
    import torch
    from torch import nn

    path = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate"),
        nn.ReLU(),
        nn.Conv2d(8, out_channels, 3, padding=1, padding_mode="replicate"),
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in path.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return path


def export_tiny_clothes_segmenter(path: Path, *, seed: int = 0) -> OnnxSegmenterSettings:
    """Write the tiny clothes segmenter to `path`; returns its settings (labels background/garment)."""
    import torch
    from torch import nn

    class TinyClothesNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.random_path = _random_path(seed, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            chroma = image.amax(dim=1, keepdim=True) - image.amin(dim=1, keepdim=True)
            logits = _CHROMA_GAIN * (chroma - _CHROMA_THRESHOLD) + _RANDOM_PATH_SCALE * torch.tanh(
                self.random_path(image)  # type: ignore[operator]
            )
            return torch.sigmoid(logits)

    _export(TinyClothesNet().eval(), path, 1)
    # The rule works on plain rgb/255, so no normalisation.
    return OnnxSegmenterSettings(path=Path(path), labels=CLOTHES_LABELS, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def export_tiny_human_parser(path: Path, *, seed: int = 0) -> OnnxSegmenterSettings:
    """Write the tiny human parser to `path`; returns its settings (the 18 default labels)."""
    import torch
    from torch import nn

    class TinyHumanParser(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.random_path = _random_path(seed, len(DEFAULT_HUMAN_PARSING_LABELS))
            tones = torch.tensor(_prototype_tones(), dtype=torch.float32) / 255.0
            self.register_buffer("prototypes", tones.view(1, -1, 3, 1, 1))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            prototypes: torch.Tensor = self.prototypes  # type: ignore[assignment]
            distance = ((image.unsqueeze(1) - prototypes) ** 2).sum(dim=2)
            return -_PROTOTYPE_GAIN * distance + _RANDOM_PATH_SCALE * torch.tanh(
                self.random_path(image)  # type: ignore[operator]
            )

    _export(TinyHumanParser().eval(), path, len(DEFAULT_HUMAN_PARSING_LABELS))
    return OnnxSegmenterSettings(
        path=Path(path), labels=DEFAULT_HUMAN_PARSING_LABELS, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
    )


@dataclass(frozen=True)
class TinySegmenters:
    clothes: ClothesSegmenter
    parser: HumanParser
    folder: Path


def build_tiny_segmenters(folder: Path | None = None, *, seed: int = 0) -> TinySegmenters:
    """Export both tiny nets (into `folder`, else a fresh temporary folder) and load them."""
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="tiny-segmenters-"))
    clothes = export_tiny_clothes_segmenter(folder / "tiny_clothes.onnx", seed=seed)
    parser = export_tiny_human_parser(folder / "tiny_human_parser.onnx", seed=seed + 1)
    return TinySegmenters(
        clothes=ClothesSegmenter(clothes, garment_labels=("garment",)),
        parser=HumanParser(parser),
        folder=folder,
    )
