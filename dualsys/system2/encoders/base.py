"""What a System 2 encoder is: inputs (frame, state, instruction) -> latent, with timings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dualsys.config import RobotConfig


@dataclass
class EncodeResult:
    """One latent and where the time went (ms). `text_cached`: the text came from the cache."""

    vector: np.ndarray
    text_ms: float
    text_cached: bool
    vision_ms: float
    fusion_ms: float


@dataclass
class BatchResult:
    """Latents for a batch of robots (B x latent_dim) and where the time went (ms, whole batch)."""

    vectors: np.ndarray
    text_ms: float
    vision_ms: float
    fusion_ms: float


class Encoder(ABC):
    """A System 2 back end, registered by name (see `dualsys.system2.encoders.register`).

    Lifecycle: `__init__` only stores the config (cheap); `configure()` loads the models and
    validates dims (slow, seconds); `warmup()` runs a few steps so the first real step is not
    an outlier; `encode()` is the step, called from the service's single worker thread (never
    from the event loop, never from System 1).
    """

    name: ClassVar[str] = ""

    def __init__(self, cfg: RobotConfig, *, untrained: bool = False) -> None:
        self.cfg = cfg
        self.untrained = untrained
        self.latent_dim = cfg.system2.latent_dim
        self.description = ""

    @property
    def fusion_checkpoint(self):
        """The configured fusion checkpoint, or None under --untrained (which overrides it)."""
        return None if self.untrained else self.cfg.system2.checkpoint

    @abstractmethod
    def configure(self) -> None:
        """Load models and weights; raise a clear error when something is missing or wrong."""

    @abstractmethod
    def encode(self, image: np.ndarray, q: np.ndarray, dq: np.ndarray, text: str) -> EncodeResult:
        """One step: H x W x 3 uint8 frame, joint positions/velocities, instruction -> latent."""

    def encode_batch(
        self,
        images: list[np.ndarray],
        qs: list[np.ndarray],
        dqs: list[np.ndarray],
        texts: list[str],
    ) -> BatchResult:
        """One step for B robots at once (the fleet server). This default runs `encode` per
        robot; back ends that can batch (builtin) override it with one forward pass."""
        res = [
            self.encode(im, q, dq, t) for im, q, dq, t in zip(images, qs, dqs, texts, strict=True)
        ]
        return BatchResult(
            vectors=np.stack([r.vector for r in res]),
            text_ms=sum(r.text_ms for r in res),
            vision_ms=sum(r.vision_ms for r in res),
            fusion_ms=sum(r.fusion_ms for r in res),
        )

    def warmup(self, steps: int = 3) -> None:
        """Run a few steps on a blank frame and the default pose (first-call costs paid here)."""
        cam = self.cfg.cameras[0]
        image = np.zeros((cam.height, cam.width, 3), dtype=np.uint8)
        q = self.cfg.limits()["default"]
        dq = np.zeros_like(q)
        for _ in range(steps):
            self.encode(image, q, dq, self.cfg.system2.default_instruction)
