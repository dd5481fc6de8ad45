"""The fusion head: text + vision + robot-state features -> latent task vector.

Architecture (small, ~0.6M parameters at the defaults): each modality is projected to
`width` and layer-normalised (so no modality dominates by scale: MobileNet features have norm
~40, MiniLM embeddings norm 1), the three tokens are concatenated and passed through a
two-layer GELU MLP to `latent_dim`, and a final non-affine LayerNorm fixes the latent's scale
(zero mean, unit variance per element), a contract System 1 can rely on.

Optional spatial pathway (`spatial_k` > 0): the pooled MobileNet vector says *what* is in the
frame but hardly *where*, and reaching for an object needs where. A small convolutional net
trained with the head looks at the frame area-downsampled to `pixels` x `pixels` (see
`dualsys.system2.vision.to_pixels`) and ends in `spatial_k` heat maps; a spatial softmax turns
each into the expected (x, y) image coordinate of a learned keypoint (Levine et al. 2016),
which becomes a fourth token. Its cost: 1.2 ms per frame on one CPU thread (measured with the
shipped GR-1 weights, downsampling included).

Weights come from a safetensors checkpoint (`system2.checkpoint` in the robot config,
trained in the behaviour issue). Checkpoint format: the head's `state_dict` tensors, with
metadata `format = "dualsys.system2.fusion"`, `version = "3"` and the integer dims
`text_dim`, `vision_dim`, `state_dim`, `latent_dim`, `width`, `spatial_k`, `pixels`,
`text_side` (as strings, safetensors metadata is str -> str; version "1" files have no
spatial pathway, versions "1" and "2" no `text_side`), and `state_norm`: the state
normalisation the head was trained with (`StateNorm.to_json` as JSON). The head then sees the
state through that normalisation, not through the robot config's current joint limits, so a
changed limit cannot silently shift what the trained head sees; a checkpoint whose joint count
differs from the robot's is refused. Files without `state_norm` use the config's limits. Write
one with `save_fusion`.

`text_side` = 1: the text input is `TextEncoder.embed_sided` (embedding + left/right side
feature, 2 x text_dim) instead of the plain embedding; callers ask `FusionHead.text_side`.

Without a checkpoint the service refuses to start unless asked for `--untrained`: then every
Linear weight is drawn from N(0, 1/fan_in) with a `torch.Generator` seeded with
`UNTRAINED_SEED` (biases 0, LayerNorm 1/0), in module order. The init is independent of the
global RNG, so every process and run gets the same weights: same inputs -> same latent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dualsys.normalise import StateNorm

FORMAT = "dualsys.system2.fusion"
FORMAT_VERSION = "3"
#: Versions `load_fusion` reads ("1": written before the spatial pathway existed; "2":
#: before the side feature).
READ_VERSIONS = ("1", "2", "3")
UNTRAINED_SEED = 20250201
DEFAULT_WIDTH = 256
#: Side of the downsampled frame the spatial pathway sees.
DEFAULT_PIXELS = 64


class FusionError(ValueError):
    """The fusion weights are missing or do not fit this encoder/robot; names file and reason."""


class SpatialKeypoints(nn.Module):
    """(B, 3, P, P) uint8 frames -> (B, 2k) expected (x, y) in [-1, 1] of k learned keypoints."""

    def __init__(self, k: int, pixels: int, channels: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 5, 2, 2), nn.GELU(),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.GELU(),
            nn.Conv2d(channels, k, 1),
        )  # fmt: skip
        side = (pixels + 1) // 2
        lin = torch.linspace(-1.0, 1.0, side)
        self.register_buffer("xs", lin.repeat(side), persistent=False)
        self.register_buffer("ys", lin.repeat_interleave(side), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.xs.dtype) / 127.5 - 1.0
        attn = torch.softmax(self.net(x).flatten(2), dim=-1)  # (B, k, side*side)
        return torch.cat([attn @ self.xs, attn @ self.ys], dim=-1)


class FusionHead(nn.Module):
    """(text, vision, state[, pixels]) features -> latent (zero mean, unit variance each)."""

    def __init__(
        self,
        text_dim: int,
        vision_dim: int,
        state_dim: int,
        latent_dim: int,
        width: int = 256,
        spatial_k: int = 0,
        pixels: int = DEFAULT_PIXELS,
        text_side: int = 0,
    ) -> None:
        super().__init__()
        #: the state normalisation the weights were trained with (set by `load_fusion`)
        self.state_norm: StateNorm | None = None
        self.dims = {
            "text_dim": text_dim,
            "vision_dim": vision_dim,
            "state_dim": state_dim,
            "latent_dim": latent_dim,
            "width": width,
            "spatial_k": spatial_k,
            "pixels": pixels,
            "text_side": int(text_side),
        }
        text_in = 2 * text_dim if text_side else text_dim
        self.text = nn.Sequential(nn.Linear(text_in, width), nn.LayerNorm(width))
        self.vision = nn.Sequential(nn.Linear(vision_dim, width), nn.LayerNorm(width))
        self.state = nn.Sequential(nn.Linear(state_dim, width), nn.LayerNorm(width))
        tokens = 3
        if spatial_k > 0:
            self.spatial = SpatialKeypoints(spatial_k, pixels)
            self.spatial_proj = nn.Sequential(nn.Linear(2 * spatial_k, width), nn.LayerNorm(width))
            tokens = 4
        self.mlp = nn.Sequential(
            nn.Linear(tokens * width, 2 * width), nn.GELU(), nn.Linear(2 * width, latent_dim)
        )
        self.out = nn.LayerNorm(latent_dim, elementwise_affine=False)

    @property
    def text_side(self) -> bool:
        """True when the text input is `TextEncoder.embed_sided`, not `embed`."""
        return bool(self.dims["text_side"])

    @property
    def wants_pixels(self) -> bool:
        """True when the head has the spatial pathway (callers must pass `pixels`)."""
        return self.dims["spatial_k"] > 0

    def pixels_of(self, image: np.ndarray) -> torch.Tensor | None:
        """The `pixels` argument for one H x W x 3 uint8 frame, on the head's device (None
        when the head has no spatial pathway)."""
        if not self.wants_pixels:
            return None
        from dualsys.system2.vision import to_pixels

        px = torch.from_numpy(to_pixels(image, self.dims["pixels"]))
        return px.to(self.text[0].weight.device)

    def forward(
        self,
        text: torch.Tensor,
        vision: torch.Tensor,
        state: torch.Tensor,
        pixels: torch.Tensor | None = None,
        keypoints: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Batched (B, dim) inputs, or single unbatched vectors (then pixels is (3, P, P)).

        keypoints: `self.spatial(pixels)` when the caller computed it already (training uses
        it for an auxiliary loss); then pixels may be None.
        """
        single = text.dim() == 1
        if single:
            text, vision, state = text[None], vision[None], state[None]
            pixels = None if pixels is None else pixels[None]
            keypoints = None if keypoints is None else keypoints[None]
        parts = [self.text(text), self.vision(vision), self.state(state)]
        if self.wants_pixels:
            if keypoints is None:
                if pixels is None:
                    raise ValueError("this fusion head has a spatial pathway: pass the pixels")
                keypoints = self.spatial(pixels)
            parts.append(self.spatial_proj(keypoints))
        out = self.out(self.mlp(torch.cat(parts, dim=-1)))
        return out[0] if single else out

    def seeded_init(self, seed: int = UNTRAINED_SEED) -> FusionHead:
        """The documented deterministic random init (see module docstring)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    std = 1.0 / math.sqrt(module.weight[0].numel())
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                    module.bias.zero_()
                elif isinstance(module, nn.Linear):
                    std = 1.0 / math.sqrt(module.in_features)
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                    module.bias.zero_()
                elif isinstance(module, nn.LayerNorm) and module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
        return self


def save_fusion(head: FusionHead, path: str | Path, state_norm: StateNorm | None = None) -> None:
    """Write a fusion checkpoint (safetensors + dims metadata + the state normalisation)."""
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "version": FORMAT_VERSION}
    meta.update({k: str(v) for k, v in head.dims.items()})
    if state_norm is not None:
        meta["state_norm"] = json.dumps(state_norm.to_json())
    tensors = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def load_fusion(path: str | Path, text_dim: int, vision_dim: int, state_dim: int, latent_dim: int):
    """Load a fusion checkpoint, checking its format and dims against what this encoder needs."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for bad files
        raise FusionError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") not in READ_VERSIONS:
        raise FusionError(
            f"{path}: metadata format/version is {meta.get('format')!r}/{meta.get('version')!r}, "
            f"expected {FORMAT!r}/one of {READ_VERSIONS}"
        )
    want = {
        "text_dim": text_dim,
        "vision_dim": vision_dim,
        "state_dim": state_dim,
        "latent_dim": latent_dim,
    }
    try:
        got = {k: int(meta[k]) for k in (*want, "width")}
        got["spatial_k"] = int(meta.get("spatial_k", "0"))
        got["pixels"] = int(meta.get("pixels", str(DEFAULT_PIXELS)))
        got["text_side"] = int(meta.get("text_side", "0"))
    except (KeyError, ValueError) as exc:
        raise FusionError(f"{path}: metadata lacks integer dim {exc}") from None
    for key, value in want.items():
        if got[key] != value:
            raise FusionError(
                f"{path}: checkpoint has {key} = {got[key]}, this setup needs {value}"
            )
    norm = None
    if "state_norm" in meta:
        try:
            norm = StateNorm.from_json(json.loads(meta["state_norm"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise FusionError(f"{path}: metadata state_norm is malformed ({exc})") from None
        if norm.dim != state_dim:
            raise FusionError(
                f"{path}: metadata state_norm covers {norm.n} joints, this robot has "
                f"{state_dim // 2}"
            )
    head = FusionHead(**got)
    missing, unexpected = head.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise FusionError(f"{path}: tensors missing {missing} / unexpected {unexpected}")
    head.state_norm = norm
    return head.eval()


def check_fusion_source(checkpoint: Path | None, untrained: bool) -> None:
    """Fail fast (before loading any model) when the fusion weights' source is unclear."""
    if checkpoint is not None and untrained:
        raise FusionError(f"both a fusion checkpoint ({checkpoint}) and --untrained were given")
    if checkpoint is None and not untrained:
        raise FusionError(
            "no fusion checkpoint: system2.checkpoint is empty in the robot config. Train one "
            "(behaviour issue) or pass --untrained for the documented seeded random init"
        )


def make_fusion(
    checkpoint: Path | None,
    untrained: bool,
    text_dim: int,
    vision_dim: int,
    state_dim: int,
    latent_dim: int,
) -> tuple[FusionHead, str]:
    """The fusion head from the checkpoint, or the seeded init when `untrained` is asked for.

    Returns (head, description). Refuses to guess: no checkpoint and not untrained is an error.
    """
    check_fusion_source(checkpoint, untrained)
    if checkpoint is not None:
        head = load_fusion(checkpoint, text_dim, vision_dim, state_dim, latent_dim)
        return head, f"checkpoint {checkpoint}"
    head = FusionHead(text_dim, vision_dim, state_dim, latent_dim, DEFAULT_WIDTH)
    return head.seeded_init().eval(), f"untrained (seeded init, seed {UNTRAINED_SEED})"


class StateFeatures:
    """Robot state -> the fusion head's state features (`dualsys.normalise.StateNorm`: the one
    normalisation of training and inference), over the joint limits until `use` gives the
    checkpoint's own."""

    def __init__(self, limits: dict[str, np.ndarray]) -> None:
        self.use(StateNorm.from_limits(limits))

    def use(self, norm: StateNorm | None) -> None:
        """Normalise with `norm` from now on (None keeps the current normalisation)."""
        if norm is not None:
            self.norm = norm
            self.n = norm.n
            self.dim = norm.dim

    def __call__(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """(n,), (n,) -> (2n,) float32, clipped to +-`StateNorm.clip`."""
        if q.shape != (self.n,) or dq.shape != (self.n,):
            raise ValueError(f"state must be ({self.n},) vectors, got {q.shape} and {dq.shape}")
        return self.norm(q, dq)
