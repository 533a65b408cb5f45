"""Tiny segmentation nets in ONNX, laid out like rembg's U²-Net family, for tests and benchmarks.

The net is not pure noise: its output is a steep function of how dark each pixel is, plus a small
random convolutional path (weights from the seed). So on a light backdrop, a darker object comes out
as foreground and the mask follows the image, while different seeds still give different models.
Importable without pytest; torch is imported only when a model is exported.
"""

import warnings
from pathlib import Path

# Luma weights (ITU-R BT.601); the net calls a pixel "product" when its luma is low.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# rembg feeds (pixel/max - mean)/std: with ImageNet's mean/std (U²-Net, BiRefNet, BRIA sessions) the luma
# of white is about +2.40 and of black -2.03; with mean 0.5/std 1 (IS-Net sessions) +0.50 and -0.50.
# The net is unsure at +0.06, between black and white on both scales...
_UNSURE_LUMA = 0.06
# ...and steep enough to be decisive on the narrower one (sigmoid(±5) for white and black), while a
# smooth grey ramp still leaves a wide undecided band.
_GAIN = 12.0
# The random path only jitters the mask; the luma term decides it.
_RANDOM_PATH_SCALE = 0.1


def export_tiny_segmentation_onnx(path: Path, *, seed: int = 0, input_size: int = 320) -> Path:
    """Write a tiny ONNX segmentation net to `path` and return it.

    I/O as rembg's u2net-style sessions expect: one input `1x3xHxW` float32 (H and W dynamic;
    `input_size` is only the size traced at export) and a first output `1x1xHxW` in [0, 1],
    followed by a second side output, as U²-Net has several.
    """
    import torch
    from torch import nn

    class TinySegmentationNet(nn.Module):
        luma: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            # Replicate padding keeps a uniform image uniform (no bright frame from zero padding).
            self.random_path = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate"),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1, padding_mode="replicate"),
                nn.ReLU(),
                nn.Conv2d(8, 1, 3, padding=1, padding_mode="replicate"),
            )
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for parameter in self.random_path.parameters():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            self.register_buffer("luma", torch.tensor(_LUMA_WEIGHTS).view(1, 3, 1, 1))

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            darkness = _UNSURE_LUMA - (image * self.luma).sum(dim=1, keepdim=True)
            logits = _GAIN * darkness + _RANDOM_PATH_SCALE * torch.tanh(self.random_path(image))
            mask = torch.sigmoid(logits)
            return mask, torch.sigmoid(logits * 0.5)

    net = TinySegmentationNet().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # dynamo=False is deliberate (the TorchScript exporter needs no extra packages and is fast for a
        # net this small); its deprecation notice and the replicate padding's constant-folding note are noise.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["mask", "side_mask"],
            dynamic_axes={
                "input": {2: "height", 3: "width"},
                "mask": {2: "height", 3: "width"},
                "side_mask": {2: "height", 3: "width"},
            },
            opset_version=17,
            dynamo=False,
        )
    return path


def export_tiny_garment_classifier_onnx(
    path: Path, *, classes: int = 4, winner: int = 0, margin: float = 6.0, seed: int = 0, input_size: int = 32
) -> Path:
    """Write a tiny ONNX garment classifier to `path` and return it.

    A conv + global average pooling + linear; the linear's bias gives class `winner` a lead of `margin` logits over
    the others (the small random weights barely move it), so its softmax probability is about
    e^margin / (e^margin + classes - 1) on any image. Input `1x3xHxW` float32 (H and W dynamic), output `1xC`.
    """
    import torch
    from torch import nn

    head = nn.Linear(4, classes)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
        bias = torch.zeros(classes)
        bias[winner] = margin
        head.bias.copy_(bias)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.rand(1, 3, input_size, input_size),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {2: "height", 3: "width"}},
            opset_version=17,
            dynamo=False,
        )
    return path
