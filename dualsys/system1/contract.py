"""A policy checkpoint's contract: the JSON beside its safetensors weights (no torch here).

It carries what the weights need from the robot and what they were validated with:
- the network's shape (`PolicySpec`), the action rate and horizon its chunks were trained at
  (loading into a robot config whose `rates.action_hz` or `policy.chunk_horizon` differs is
  an error naming both values, `dualsys.system1.policy.load_checkpoint`);
- the normalisation it was trained with (`PolicyNorm`; state: `dualsys.normalise.StateNorm`,
  actions: the controlled joints mapped to [-1, 1] over their position limits), used at
  inference instead of the robot config's limits;
- the sampler settings that belong to the weights, and a record of the robot's run-time
  settings they were validated with.

Which setting lives where:
- with the weights (policy.json): what training decided and what the weights were validated
  with: shape, `action_hz`, `horizon`, the normalisation, and `noise_scale` (the scale of the
  noise each chunk is sampled from; the learned distribution's, `dualsys train` writes the
  value the robot's configured checkpoint samples with);
- in the robot TOML (`[policy]`): what the robot's computer and run time decide: `euler_steps`
  (network passes per chunk: the latency it pays), `precision`, `threads`, `replan_below`
  (when to replan) and `switch_settle_ms` (how System 1 treats an instruction switch). The
  checkpoint records their values when it was written (`runtime`), and `build` warns when
  the robot config differs from them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dualsys.config import RobotConfig
from dualsys.normalise import StateNorm


class PolicyError(ValueError):
    """The policy checkpoint or spec is unusable; the message names the file and the field."""


@dataclass(frozen=True)
class PolicySpec:
    """Shape, rate and sampler settings of a policy network; stored as JSON beside its
    safetensors weights (see the module docstring for what lives here and what in the TOML)."""

    horizon: int
    action_dim: int
    latent_dim: int
    state_dim: int
    width: int
    layers: int
    heads: int
    #: scale of the starting noise when sampling (1 = the trained distribution; < 1 samples
    #: closer to the mode: less jitter, more precise holds; 0 = deterministic, which can hold
    #: still where a motion should start: the GR-1 wave, benchmarks/results/behaviours.md).
    #: Optional in the JSON (default 1).
    noise_scale: float = 1.0
    #: add the projected latent to every action token as well as giving it its own prefix
    #: token (a stronger, FiLM-like conditioning path; optional in the JSON, default off).
    latent_tokens: bool = False
    #: trained with a clean prefix of the target chunk given as tokens at flow time 1 (the
    #: actions frozen by real-time chunking); sampling then conditions on the frozen actions
    #: instead of inpainting them (optional in the JSON, default off).
    prefix_conditioning: bool = False
    #: the action rate (Hz) the chunks were trained at: action i of a chunk is due i / action_hz
    #: s after its first (required; 0 only in specs written before the field existed, which
    #: `load_checkpoint` refuses)
    action_hz: int = 0

    @classmethod
    def for_robot(cls, cfg: RobotConfig) -> PolicySpec:
        """The spec the robot config asks for (state = q and dq of all joints)."""
        p = cfg.policy
        return cls(
            horizon=p.chunk_horizon,
            action_dim=len(cfg.controlled_indices),
            latent_dim=cfg.system2.latent_dim,
            state_dim=2 * cfg.n_joints,
            width=p.width,
            layers=p.layers,
            heads=p.heads,
            action_hz=cfg.rates.action_hz,
        )


#: fields of the spec that must equal the robot config's (the rest may differ: shape, sampler)
MUST_MATCH = {
    "horizon": "policy.chunk_horizon",
    "action_hz": "rates.action_hz",
    "action_dim": "the number of controlled joints",
    "latent_dim": "system2.latent_dim",
    "state_dim": "2 x the number of joints",
}


@dataclass(frozen=True, eq=False)
class PolicyNorm:
    """The normalisation a policy was trained with: the state (`StateNorm`) and the actions
    (controlled joints: a = (x - action_mid) / action_half, so [-1, 1] spans their limits)."""

    state: StateNorm
    action_mid: np.ndarray
    action_half: np.ndarray

    @classmethod
    def for_robot(cls, cfg: RobotConfig) -> PolicyNorm:
        """The normalisation over the robot config's joint limits."""
        state = StateNorm.from_limits(cfg.limits())
        ctrl = cfg.controlled_indices
        return cls(state, state.q_mid[ctrl], state.q_half[ctrl])

    def actions(self, joints: np.ndarray) -> np.ndarray:
        """Joint-space actions (..., A) -> normalised (float32)."""
        return ((joints - self.action_mid) / self.action_half).astype(np.float32)

    def joints(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions (..., A) -> joint space (float32)."""
        return (self.action_mid + self.action_half * actions).astype(np.float32)

    def to_json(self) -> dict:
        """JSON values (exact)."""
        return {
            "state": self.state.to_json(),
            "action_mid": self.action_mid.tolist(),
            "action_half": self.action_half.tolist(),
        }

    @classmethod
    def from_json(cls, raw: dict, action_dim: int, state_dim: int) -> PolicyNorm:
        """Inverse of `to_json`, checked against the spec's dims (ValueError naming the field)."""
        state = StateNorm.from_json(raw["state"])
        mid = np.asarray(raw["action_mid"], np.float64)
        half = np.asarray(raw["action_half"], np.float64)
        if state.dim != state_dim:
            raise ValueError(f"state: {state.n} joints, the spec's state_dim is {state_dim}")
        if mid.shape != (action_dim,) or half.shape != (action_dim,):
            raise ValueError(f"action_mid / action_half: need {action_dim} entries each")
        if not (np.isfinite(mid).all() and np.isfinite(half).all() and (half > 0).all()):
            raise ValueError("action_mid / action_half: must be finite, action_half > 0")
        return cls(state, mid, half)


def runtime_settings(cfg: RobotConfig) -> dict:
    """The robot config's run-time settings of the policy (recorded in a checkpoint)."""
    p = cfg.policy
    return {
        "euler_steps": p.euler_steps,
        "replan_below": p.replan_below,
        "switch_settle_ms": p.switch_settle_ms,
        "precision": p.precision,
    }


def read_contract(path: str | Path) -> tuple[PolicySpec, PolicyNorm, dict]:
    """(spec, normalisation, runtime settings) from the JSON beside the weights at `path`."""
    spec_path = Path(path).with_suffix(".json")
    try:
        raw = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{spec_path}: policy spec (JSON) not found beside the weights") from None
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{spec_path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{spec_path}: expected a JSON object")
    norm_raw = raw.pop("normalisation", None)
    runtime = raw.pop("runtime", {})
    try:
        spec = PolicySpec(**raw)
    except TypeError as exc:
        raise PolicyError(f"{spec_path}: not a valid policy spec: {exc}") from None
    if spec.action_hz <= 0:
        raise PolicyError(
            f"{spec_path}: action_hz is missing: the checkpoint must say the action rate its "
            'chunks were trained at (add "action_hz": the rates.action_hz of its training)'
        )
    if norm_raw is None:
        raise PolicyError(
            f"{spec_path}: normalisation is missing: the checkpoint must carry the state and "
            "action normalisation it was trained with (dualsys.system1.policy.PolicyNorm)"
        )
    try:
        norm = PolicyNorm.from_json(norm_raw, spec.action_dim, spec.state_dim)
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"{spec_path}: normalisation: {exc}") from None
    if not isinstance(runtime, dict):
        raise PolicyError(f"{spec_path}: runtime: expected an object")
    return spec, norm, runtime


def write_contract(path: str | Path, spec: PolicySpec, norm: PolicyNorm, runtime: dict) -> Path:
    """Write the contract of the weights at `path` (JSON, same stem). Returns the JSON path."""
    doc = {**asdict(spec), "normalisation": norm.to_json(), "runtime": dict(runtime)}
    out = Path(path).with_suffix(".json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out
