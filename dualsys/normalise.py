"""How the robot state is normalised for the learned models: one implementation.

System 2's fusion head (`dualsys.system2.fusion.StateFeatures`), System 1's policy
(`dualsys.system1.policy.ChunkSampler.state_vector`) and their training
(`dualsys.behaviours.train`) all see the state through `StateNorm`: each joint position
mapped to [-1, 1] over its position limits, each velocity divided by its velocity limit,
both clipped to +-`clip`.

The clip (`STATE_CLIP` = 4): the shipped weights were trained on clipped states, so at run
time a state beyond the clip is, to the model, the nearest state it was trained on. A robot
inside its limits does not reach it: over an offline evaluation of every behaviour (18
episodes, 164k features) the largest feature was 1.99. A glitched or hostile state (a
velocity of 1e30 passes the bus's finite check) would otherwise reach the network unbounded
(tests/test_normalise.py). Arithmetic in float64, features float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: bound of every normalised state feature (see the module docstring)
STATE_CLIP = 4.0


@dataclass(frozen=True, eq=False)
class StateNorm:
    """Joint state -> features: (q - q_mid) / q_half and dq / dq_scale, clipped to +-clip."""

    q_mid: np.ndarray
    q_half: np.ndarray
    dq_scale: np.ndarray
    clip: float = STATE_CLIP

    @classmethod
    def from_limits(cls, limits: dict[str, np.ndarray], clip: float = STATE_CLIP) -> StateNorm:
        """The normalisation over a robot's joint limits (`RobotConfig.limits()`)."""
        lo = np.asarray(limits["min"], np.float64)
        hi = np.asarray(limits["max"], np.float64)
        vel = np.asarray(limits["velocity"], np.float64)
        return cls((hi + lo) / 2, np.maximum((hi - lo) / 2, 1e-6), vel, float(clip))

    @property
    def n(self) -> int:
        """Number of joints."""
        return len(self.q_mid)

    @property
    def dim(self) -> int:
        """Feature size (2 n)."""
        return 2 * self.n

    def __call__(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """(..., n) positions and velocities -> (..., 2n) float32 features."""
        f = np.concatenate([(q - self.q_mid) / self.q_half, dq / self.dq_scale], axis=-1)
        return np.clip(f, -self.clip, self.clip).astype(np.float32)

    def to_json(self) -> dict:
        """The normalisation as JSON values (exact: floats round-trip through repr)."""
        return {
            "q_mid": self.q_mid.tolist(),
            "q_half": self.q_half.tolist(),
            "dq_scale": self.dq_scale.tolist(),
            "clip": self.clip,
        }

    @classmethod
    def from_json(cls, raw: dict) -> StateNorm:
        """Inverse of `to_json`; ValueError naming the field on anything malformed."""
        arrays = []
        for key in ("q_mid", "q_half", "dq_scale"):
            a = np.asarray(raw[key], np.float64)
            if a.ndim != 1 or not np.isfinite(a).all():
                raise ValueError(f"{key}: expected a list of finite numbers")
            if key != "q_mid" and (a <= 0).any():
                raise ValueError(f"{key}: every entry must be > 0")
            arrays.append(a)
        if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
            raise ValueError("q_mid, q_half and dq_scale must have one entry per joint")
        clip = float(raw["clip"])
        if not clip > 0:
            raise ValueError(f"clip: must be > 0, got {clip}")
        return cls(*arrays, clip)
