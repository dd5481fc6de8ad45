"""System 1's flow-matching action head (torch) and its CPU inference forms.

A small transformer over the H action tokens, conditioned on the System 2 latent and the
proprioceptive state (two prefix tokens) and on the flow time. Sampling integrates the
learned velocity field with K Euler steps from Gaussian noise (GR00T N1 uses K = 4).

Real-time chunking (Black et al., 2025): the caller passes the actions of the previous chunk
that overlap the new one and a weight per action (1 = frozen, must execute unchanged; between
0 and 1 = soft guidance). A policy trained with prefix conditioning (`spec.prefix_conditioning`,
training-time action conditioning) gets the frozen actions as clean tokens at flow time 1 and
generates the rest knowing them. Otherwise it is done by inpainting: at every Euler step the
overlapping part of the sample is pulled onto the flow path of those actions, so the free
actions are generated consistent with the frozen ones. Either way the frozen ones are copied
exactly at the end.

A checkpoint is the weights (safetensors) plus a JSON file of the same stem that carries the
weights' contract (`PolicySpec`, `PolicyNorm`): the network's shape, the action rate and
horizon its chunks were trained at (loading into a robot config whose `rates.action_hz` or
`policy.chunk_horizon` differs is an error naming both values), the normalisation it was
trained with (state: `dualsys.normalise.StateNorm`; actions: the controlled joints mapped to
[-1, 1] over their position limits), used at inference instead of the robot config's
limits, and the sampler settings that belong to the weights.

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
Random weights only on request.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from dualsys.config import RobotConfig
from dualsys.normalise import StateNorm
from dualsys.timing import warn_once


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
_MUST_MATCH = {
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


class _Block(nn.Module):
    """Pre-norm transformer block built from nn.Linear only (all of it int8-quantisable)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.n2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        qkv = self.qkv(self.n1(h)).view(b, t, 3, self.heads, w // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, w))
        return h + self.fc2(F.gelu(self.fc1(self.n2(h))))


class FlowPolicy(nn.Module):
    """Velocity field v(x_tau, tau | latent, state) over a chunk of normalised actions."""

    def __init__(self, spec: PolicySpec, norm: PolicyNorm | None = None) -> None:
        super().__init__()
        self.spec = spec
        #: the normalisation the weights are (to be) trained with; written with the checkpoint
        self.normalisation = norm
        #: the robot's run-time settings recorded in the checkpoint (`runtime_settings`)
        self.runtime: dict = {}
        w = spec.width
        self.act_in = nn.Linear(spec.action_dim, w)
        self.pos = nn.Parameter(torch.randn(spec.horizon, w) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.latent_in = nn.Linear(spec.latent_dim, w)
        self.state_in = nn.Linear(spec.state_dim, w)
        self.blocks = nn.ModuleList(_Block(w, spec.heads) for _ in range(spec.layers))
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, spec.action_dim)
        freqs = torch.exp(-math.log(1000.0) * torch.arange(w // 2) / (w // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def _time(self, tau: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Flow-time embedding of (...) times -> (..., width)."""
        ang = tau[..., None].float() * 1000.0 * self.freqs
        return self.time_mlp(torch.cat([ang.sin(), ang.cos()], -1).to(dtype))

    def forward(
        self,
        x: torch.Tensor,
        tau: torch.Tensor,
        latent: torch.Tensor,
        state: torch.Tensor,
        tau_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, H, A) noisy actions; tau: (B,) flow time in [0, 1]; returns (B, H, A).

        tau_tokens: (B, H) flow time per action token (prefix conditioning: 1 for the given
        clean actions, tau for the rest); None = tau for every token.
        """
        temb = self._time(tau, x.dtype)[:, None]
        tok_t = temb if tau_tokens is None else self._time(tau_tokens, x.dtype)
        lat = self.latent_in(latent)
        tokens = self.act_in(x) + self.pos + tok_t
        if self.spec.latent_tokens:
            tokens = tokens + lat[:, None]
        cond = torch.stack([lat, self.state_in(state)], 1) + temb
        h = torch.cat([cond, tokens], 1)
        for blk in self.blocks:
            h = blk(h)
        return self.out(self.norm(h[:, 2:]))


def flow_loss(
    model: FlowPolicy,
    x1: torch.Tensor,
    latent: torch.Tensor,
    state: torch.Tensor,
    gen: torch.Generator,
    prefix_max: int = 0,
    prefix_offset: float = 0.0,
) -> torch.Tensor:
    """Conditional flow-matching loss of normalised target chunks x1 (B, H, A).

    Linear path x_tau = (1 - tau) noise + tau x1, velocity target x1 - noise (the path
    `ChunkSampler.sample` integrates). prefix_max > 0: prefix conditioning; each sample gives
    its first d ~ U{0..prefix_max} actions clean at flow time 1 and is scored on the others.
    prefix_offset > 0: the given prefix is shifted by a constant per-joint offset
    N(0, s^2), s ~ U(0, prefix_offset) per sample, while the scored actions stay the
    demonstration's: the prefix still tells the motion's phase and speed (its shape), but a
    prefix that lies off the demonstrated pose (the policy's own undershoot, fed back by
    real-time chunking) is corrected instead of continued.
    """
    noise = torch.randn(x1.shape, generator=gen)
    tau = torch.rand(len(x1), generator=gen)
    xt = (1 - tau[:, None, None]) * noise + tau[:, None, None] * x1
    if prefix_max <= 0:
        return F.mse_loss(model(xt, tau, latent, state), x1 - noise)
    d = torch.randint(0, prefix_max + 1, (len(x1),), generator=gen)
    given = (torch.arange(x1.shape[1])[None] < d[:, None]).float()  # (B, H)
    prefix = x1
    if prefix_offset > 0:
        s = torch.rand(len(x1), 1, 1, generator=gen) * prefix_offset
        prefix = x1 + s * torch.randn(len(x1), 1, x1.shape[2], generator=gen)
    xt = given[..., None] * prefix + (1 - given[..., None]) * xt
    v = model(xt, tau, latent, state, given + (1 - given) * tau[:, None])
    err = ((v - (x1 - noise)) ** 2).mean(-1)
    return (err * (1 - given)).sum() / (1 - given).sum().clamp_min(1.0)


def n_params(model: nn.Module) -> int:
    """Parameter count of the fp32 model."""
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: FlowPolicy, path: str | Path, runtime: dict | None = None) -> Path:
    """Write weights (safetensors) and contract (JSON, same stem: the spec, the model's
    normalisation and `runtime`, the robot's run-time settings). Returns the weights path."""
    from safetensors.torch import save_file

    if model.normalisation is None:
        raise PolicyError(f"{path}: the model has no normalisation (FlowPolicy(spec, norm))")
    path = Path(path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    doc = {**asdict(model.spec), "normalisation": model.normalisation.to_json()}
    doc["runtime"] = dict(runtime if runtime is not None else model.runtime)
    path.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    return path


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


def load_checkpoint(path: str | Path, expect: PolicySpec | None = None) -> FlowPolicy:
    """Load weights + contract; the horizon, action rate and dims must equal `expect`'s."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise PolicyError(f"{path}: policy weights not found")
    spec, norm, runtime = read_contract(path)
    spec_path = path.with_suffix(".json")
    if expect is not None:
        for name, where in _MUST_MATCH.items():
            got, want = getattr(spec, name), getattr(expect, name)
            if got != want:
                raise PolicyError(
                    f"{spec_path}: {name} is {got}, the robot config needs {want} ({where}); "
                    "the weights were trained for the first"
                )
    model = FlowPolicy(spec, norm)
    model.runtime = runtime
    try:
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    except RuntimeError as exc:
        raise PolicyError(f"{path}: weights do not fit the spec: {exc}") from None
    if missing or unexpected:
        raise PolicyError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}")
    return model.eval()


def optimise(model: FlowPolicy, precision: str) -> nn.Module:
    """CPU inference form: fp32 eager, bf16 weights, or int8 dynamic quantisation of Linears."""
    model = model.eval()
    if precision == "fp32":
        return model
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    raise PolicyError(f"precision {precision!r}: expected fp32, bf16 or int8")


class ChunkSampler:
    """Samples action chunks in joint space for one robot (normalisation, RTC inpainting)."""

    def __init__(
        self,
        model: nn.Module,
        spec: PolicySpec,
        cfg: RobotConfig,
        precision: str,
        norm: PolicyNorm | None = None,
    ):
        """norm: the checkpoint's normalisation (default: over the robot config's limits)."""
        self.model, self.spec, self.steps = model, spec, cfg.policy.euler_steps
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.norm = norm if norm is not None else PolicyNorm.for_robot(cfg)
        self.mid, self.half = self.norm.action_mid, self.norm.action_half
        self.q_mid, self.q_half = self.norm.state.q_mid, self.norm.state.q_half
        self.gen = torch.Generator().manual_seed(0)
        self.noise_scale = float(spec.noise_scale)

    def seed(self, seed: int) -> None:
        """Re-seed the noise generator (reproducible benchmarks)."""
        self.gen.manual_seed(seed)

    def state_vector(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """Normalised proprioceptive input (the checkpoint's `StateNorm`)."""
        return self.norm.state(q, dq)

    @torch.inference_mode()
    def sample(
        self,
        latent: np.ndarray,
        q: np.ndarray,
        dq: np.ndarray,
        prefix: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """One chunk (H x n_controlled, joint space, float32).

        prefix: (m, n_controlled) actions of the previous chunk aligned with the new chunk's
        first m slots; weights: (m,) in [0, 1], 1 = frozen (copied exactly).
        """
        H, A = self.spec.horizon, self.spec.action_dim
        dt = self.dtype
        lat = torch.as_tensor(np.array(latent, np.float32))[None].to(dt)
        st = torch.as_tensor(self.state_vector(q, dq))[None].to(dt)
        noise = (torch.randn(1, H, A, generator=self.gen) * self.noise_scale).to(dt)
        x = noise.clone()
        w = target = None
        if prefix is not None and len(prefix):
            m = min(len(prefix), H)
            tgt = np.zeros((H, A), np.float32)
            tgt[:m] = self.norm.actions(prefix[:m])
            ww = np.zeros((H, 1), np.float32)
            ww[:m, 0] = 1.0 if weights is None else weights[:m]
            target = torch.as_tensor(tgt)[None].to(dt)
            w = torch.as_tensor(ww)[None].to(dt)
        K = self.steps
        frozen = None if w is None else (w >= 1).to(dt)
        conditioned = frozen is not None and self.spec.prefix_conditioning
        if conditioned:
            given = frozen[..., 0]  # (1, H): 1 on the frozen prefix, given as clean tokens
            x = frozen * target + (1 - frozen) * x
        for k in range(K):
            tau = k / K
            tt = torch.full((1,), tau, dtype=dt)
            if w is not None:  # frozen and soft-guided actions onto the old chunk's flow path
                x = w * ((1 - tau) * noise + tau * target) + (1 - w) * x
            if conditioned:  # the frozen actions as clean tokens at flow time 1
                x = frozen * target + (1 - frozen) * x
                v = self.model(x, tt, lat, st, given + (1 - given) * tau)
            else:
                v = self.model(x, tt, lat, st)
            x = x + v / K
        if frozen is not None:
            x = frozen * target + (1 - frozen) * x
        return self.norm.joints(x[0].float().clamp_(-1.0, 1.0).numpy())


def build(cfg: RobotConfig, untrained: bool = False, precision: str | None = None):
    """Load (or, with untrained=True, randomly initialise) the robot's policy.

    Returns (ChunkSampler, info dict with precision and params). Sets torch to the configured
    thread count.
    """
    torch.set_num_threads(cfg.policy.threads)
    spec = PolicySpec.for_robot(cfg)
    precision = precision or cfg.policy.precision
    if cfg.policy.checkpoint is not None:
        model = load_checkpoint(cfg.policy.checkpoint, spec)
        spec = model.spec
        source = str(cfg.policy.checkpoint)
        differs = {
            k: (v, model.runtime[k])
            for k, v in runtime_settings(cfg).items()
            if k in model.runtime and model.runtime[k] != v
        }
        if differs:
            said = ", ".join(f"{k} {v} (checkpoint: {c})" for k, (v, c) in differs.items())
            warn_once(f"policy: {cfg.path}: {said}: not the settings the weights were "
                      f"validated with ({cfg.policy.checkpoint.with_suffix('.json')})")  # fmt: skip
    elif untrained:
        torch.manual_seed(0)
        model = FlowPolicy(spec, PolicyNorm.for_robot(cfg)).eval()
        source = "untrained (random init)"
    else:
        raise PolicyError(
            f"{cfg.path}: policy.checkpoint is empty: no trained policy weights are configured; "
            "pass --untrained-policy to run with a random-init policy (timing work only)"
        )
    params = n_params(model)
    sampler = ChunkSampler(optimise(model, precision), spec, cfg, precision, model.normalisation)
    return sampler, {"precision": precision, "params": params, "weights": source}


def time_sampler(sampler: ChunkSampler, n: int, latent_dim: int, n_joints: int) -> list[float]:
    """Latencies (s) of n chunk samples with fixed random inputs (warm-up included by caller)."""
    rng = np.random.default_rng(0)
    lat = rng.standard_normal(latent_dim).astype(np.float32)
    q = np.zeros(n_joints)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        sampler.sample(lat, q, q)
        out.append(time.perf_counter() - t)
    return out
