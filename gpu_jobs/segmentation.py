"""Segmentation for the garment recipes: ONNX nets (clothes segmenter, human parser) and a backdrop key.

- `OnnxSegmenter` runs any per-pixel classifier exported to ONNX (onnxruntime, CUDA when asked and present); its
  label names come from configuration, so a different net only needs a different label list.
- `ClothesSegmenter` says which pixels are garment (ghost mannequin: garment vs mannequin).
- `HumanParser` labels a person photo; `agnostic_mask` turns the labels into the region try-on may repaint.
- `backdrop_foreground` keys a plain studio backdrop (what is not backdrop is foreground); weight-free, so the
  ghost mannequin recipe can tell the mannequin from the backdrop without a third net.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from PIL import Image

from schemas import GarmentCategory

if TYPE_CHECKING:
    from .config import ModelConfig, SegmenterSpec

# The 18 labels of the widely used ATR-style clothes/human parser (SegFormer "segformer_b2_clothes" order).
DEFAULT_HUMAN_PARSING_LABELS: tuple[str, ...] = (
    "background",
    "hat",
    "hair",
    "sunglasses",
    "upper_clothes",
    "skirt",
    "pants",
    "dress",
    "belt",
    "left_shoe",
    "right_shoe",
    "face",
    "left_leg",
    "right_leg",
    "left_arm",
    "right_arm",
    "bag",
    "scarf",
)
# Which of those labels are garment, for a clothes segmenter that uses the same label set.
DEFAULT_GARMENT_LABELS: tuple[str, ...] = ("upper_clothes", "skirt", "pants", "dress", "belt", "scarf")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TryOnRegion = Literal["upper", "lower", "full"]
REGION_FOR_CATEGORY: dict[GarmentCategory, TryOnRegion] = {
    GarmentCategory.TOPS: "upper",
    GarmentCategory.OUTERWEAR: "upper",
    GarmentCategory.BOTTOMS: "lower",
    GarmentCategory.DRESSES: "full",
}

# Nets whose output is smaller than this (long side) are upsampled to it before the argmax, so garment edges are
# decided on smooth logits rather than by blowing up a coarse label map; the rest of the way is nearest-neighbour.
_WORKING_LONG_SIDE = 1024


class SegmentationError(RuntimeError):
    """A segmenter is misconfigured (missing file, label list not matching the net's output)."""


@dataclass(frozen=True)
class OnnxSegmenterSettings:
    """How to run one ONNX segmentation net.

    The net takes one `1x3xHxW` float32 input ((rgb/255 - mean)/std) and gives `1xCxhxw` scores as its first
    output. With C == len(labels) the label of a pixel is the argmax; with C == 1 and two labels the single
    channel is the probability of `labels[1]` (threshold 0.5).
    """

    path: Path
    labels: tuple[str, ...]
    input_size: tuple[int, int] | None = None  # (width, height) the net was exported for; None = any size (x32)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    device: Literal["cpu", "cuda"] = "cpu"


class OnnxSegmenter:
    """A per-pixel classifier in ONNX: image in, label map (indices into `settings.labels`) out."""

    def __init__(self, settings: OnnxSegmenterSettings) -> None:
        import onnxruntime as ort

        if not Path(settings.path).is_file():
            raise SegmentationError(f"segmentation model not found: {settings.path}")
        if len(settings.labels) < 2 or len(set(settings.labels)) != len(settings.labels):
            raise SegmentationError(f"a segmenter needs at least two distinct label names, got {settings.labels}")
        self.settings = settings
        providers = ["CPUExecutionProvider"]
        if settings.device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(str(settings.path), providers=providers)
        self._input_name = self._session.get_inputs()[0].name

    @property
    def labels(self) -> tuple[str, ...]:
        return self.settings.labels

    def label_map(self, image: Image.Image) -> np.ndarray:
        """Label index per pixel (uint8, the image's height x width)."""
        s = self.settings
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        if s.input_size is not None:
            net_w, net_h = s.input_size
        else:
            # Fully convolutional nets want sides divisible by their total stride; 32 covers the usual ones.
            scale = min(1.0, _WORKING_LONG_SIDE / max(width, height))
            net_w, net_h = (max(32, round(side * scale / 32) * 32) for side in (width, height))
        net_rgb = cv2.resize(rgb, (net_w, net_h), interpolation=cv2.INTER_AREA if net_w < width else cv2.INTER_LINEAR)
        mean, std = np.asarray(s.mean, np.float32), np.asarray(s.std, np.float32)
        tensor = (net_rgb.astype(np.float32) / np.float32(255.0) - mean) / std
        tensor = np.ascontiguousarray(tensor.transpose(2, 0, 1)[None])
        scores = np.asarray(self._session.run(None, {self._input_name: tensor})[0], dtype=np.float32)
        if scores.ndim != 4 or scores.shape[0] != 1:
            raise SegmentationError(f"{s.path.name}: expected a 1xCxHxW output, got shape {scores.shape}")
        channels = scores.shape[1]
        if channels != len(s.labels) and not (channels == 1 and len(s.labels) == 2):
            raise SegmentationError(
                f"{s.path.name} gives {channels} channels but {len(s.labels)} labels are configured: {s.labels}"
            )
        # Decide at a working size no larger than the image, then nearest-neighbour to full size.
        scale = min(1.0, _WORKING_LONG_SIDE / max(width, height))
        work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        planes = scores[0].transpose(1, 2, 0)
        if planes.shape[:2] != (work_size[1], work_size[0]):
            planes = cv2.resize(planes, work_size, interpolation=cv2.INTER_LINEAR)
        planes = planes.reshape(work_size[1], work_size[0], channels)
        labels = (planes[..., 0] >= 0.5) if channels == 1 else planes.argmax(axis=2)
        labels = labels.astype(np.uint8)
        if work_size != (width, height):
            labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        return labels

    def mask(self, image: Image.Image, wanted: Collection[str]) -> np.ndarray:
        """Boolean mask of the pixels labelled with any of `wanted`."""
        return np.isin(self.label_map(image), self.indices(wanted))

    def indices(self, names: Collection[str]) -> list[int]:
        unknown = set(names) - set(self.labels)
        if unknown:
            raise SegmentationError(f"labels {sorted(unknown)} are not among this segmenter's labels {self.labels}")
        return [self.labels.index(name) for name in names]


class ClothesSegmenter:
    """Garment vs everything else, from an ONNX net and the names of its garment labels."""

    def __init__(self, settings: OnnxSegmenterSettings, garment_labels: Sequence[str]) -> None:
        self.net = OnnxSegmenter(settings)
        if not garment_labels:
            raise SegmentationError("a clothes segmenter needs at least one garment label")
        self.garment_labels = tuple(garment_labels)
        self.net.indices(self.garment_labels)  # fail at load time, not on the first job

    def garment_mask(self, image: Image.Image) -> np.ndarray:
        return self.net.mask(image, self.garment_labels)


@dataclass(frozen=True)
class AgnosticRules:
    """Which human-parsing labels try-on repaints for each region, and which it never touches.

    `replace` is the clothing the new garment takes the place of (grown by the dilation, so a looser garment
    fits); `limbs` are added only when asked (a sleeve or leg length may change); `protected` labels are
    removed after the dilation, so the face, hair and shoes keep their own pixels.
    """

    replace: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "upper": ("upper_clothes", "scarf"),
            "lower": ("pants", "skirt", "belt"),
            "full": ("upper_clothes", "scarf", "pants", "skirt", "belt", "dress"),
        }
    )
    limbs: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "upper": ("left_arm", "right_arm"),
            "lower": ("left_leg", "right_leg"),
            "full": ("left_arm", "right_arm", "left_leg", "right_leg"),
        }
    )
    protected: tuple[str, ...] = ("face", "hair", "hat", "sunglasses", "left_shoe", "right_shoe", "bag")


class HumanParser:
    """Body-part and clothing labels for a person photo."""

    def __init__(self, settings: OnnxSegmenterSettings, rules: AgnosticRules | None = None) -> None:
        self.net = OnnxSegmenter(settings)
        self.rules = rules or AgnosticRules()

    def parse(self, image: Image.Image) -> np.ndarray:
        return self.net.label_map(image)

    def agnostic_mask(
        self, labels: np.ndarray, region: TryOnRegion, *, mask_limbs: bool = False, dilate_share: float = 0.015
    ) -> np.ndarray:
        """Boolean mask of what try-on repaints for `region` on a parsed photo (see `AgnosticRules`)."""
        known = set(self.net.labels)
        replace = [name for name in self.rules.replace[region] if name in known]
        if not replace:
            raise SegmentationError(f"none of the {region} clothing labels {self.rules.replace[region]} are configured")
        mask = np.isin(labels, self.net.indices(replace))
        radius = max(1, round(dilate_share * max(labels.shape)))
        if mask.any():
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            mask = cv2.dilate(mask.view(np.uint8), kernel).astype(bool)
        if mask_limbs:
            limbs = [name for name in self.rules.limbs[region] if name in known]
            mask |= np.isin(labels, self.net.indices(limbs))
        protected = [name for name in self.rules.protected if name in known]
        mask &= ~np.isin(labels, self.net.indices(protected))
        return mask


def backdrop_foreground(
    image: Image.Image, *, tolerance: float = 10.0, border_px: int = 3, working_long_side: int = 1024
) -> np.ndarray:
    """Boolean mask of what is not the studio backdrop.

    The backdrop's colour is the median of the frame's border; backdrop is what lies within `tolerance` (CIE76
    ΔE in CIELAB) of it *and* is connected to the border, so a backdrop-coloured patch inside a product stays
    foreground. Decided at a working size, nearest-neighbour back to full size.
    """
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    scale = min(1.0, working_long_side / max(width, height))
    work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    work = cv2.resize(rgb, work_size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    lab = cv2.cvtColor(work.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    band = max(1, min(border_px, min(lab.shape[:2]) // 4))
    border = np.zeros(lab.shape[:2], bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    backdrop_colour = np.median(lab[border], axis=0)
    near = np.linalg.norm(lab - backdrop_colour, axis=2) <= tolerance
    count, components = cv2.connectedComponents(near.view(np.uint8), connectivity=4)
    touching = np.unique(components[border & near])
    backdrop = np.isin(components, touching[touching > 0]) if count > 1 else near
    foreground = ~backdrop
    if work_size != (width, height):
        foreground = cv2.resize(foreground.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        foreground = foreground.astype(bool)
    return foreground


def settings_from_spec(spec: "SegmenterSpec", device: Literal["cpu", "cuda"]) -> OnnxSegmenterSettings:
    """Segmenter settings from a configured spec: `labels` (name -> class index) must cover 0..C-1 exactly."""
    path = Path(spec.source)
    if spec.weight_name:
        path = path / spec.weight_name
    if not spec.labels:
        labels = DEFAULT_HUMAN_PARSING_LABELS
    else:
        by_index = {index: name for name, index in spec.labels.items()}
        if sorted(by_index) != list(range(len(spec.labels))):
            raise SegmentationError(
                f"segmenter '{spec.name}': label indices must be 0..{len(spec.labels) - 1} without gaps, "
                f"got {spec.labels}"
            )
        labels = tuple(by_index[index] for index in range(len(by_index)))
    return OnnxSegmenterSettings(path=path, labels=labels, input_size=spec.input_size, device=device)


def garment_labels_for(labels: Sequence[str]) -> tuple[str, ...]:
    """The garment labels of a clothes segmenter: `garment` when it has one, else the usual clothing labels."""
    if "garment" in labels:
        return ("garment",)
    found = tuple(name for name in DEFAULT_GARMENT_LABELS if name in labels)
    if not found:
        raise SegmentationError(f"no garment label among {tuple(labels)}; name one 'garment'")
    return found


def load_clothes_segmenter(config: "ModelConfig", device: Literal["cpu", "cuda"]) -> ClothesSegmenter:
    """The configured `clothes` segmenter (licence-checked); the tiny one for `source: tiny`."""
    spec = _segmenter_spec(config, "clothes")
    if spec.is_tiny:
        from .tiny_segmenters import build_tiny_segmenters

        return build_tiny_segmenters().clothes
    settings = settings_from_spec(spec, device)
    return ClothesSegmenter(settings, garment_labels_for(settings.labels))


def load_human_parser(config: "ModelConfig", device: Literal["cpu", "cuda"]) -> HumanParser:
    """The configured `human_parsing` segmenter (licence-checked); the tiny one for `source: tiny`."""
    spec = _segmenter_spec(config, "human_parsing")
    if spec.is_tiny:
        from .tiny_segmenters import build_tiny_segmenters

        return build_tiny_segmenters().parser
    return HumanParser(settings_from_spec(spec, device))


def _segmenter_spec(config: "ModelConfig", role: str) -> "SegmenterSpec":
    from .licences import check_licence

    spec = config.segmenters.get(role)
    if spec is None:
        raise SegmentationError(f"no '{role}' segmenter is configured (ModelConfig.segmenters.{role})")
    check_licence(spec, config.commercial)
    return spec
