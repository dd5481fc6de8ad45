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

A checkpoint is the weights (safetensors) plus the JSON contract of the same stem
(`dualsys.system1.contract`: shape, action rate and horizon, normalisation, sampler settings).
Random weights only on request.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from dualsys.config import RobotConfig
from dualsys.system1.contract import (
    MUST_MATCH,
    PolicyError,
    PolicyNorm,
    PolicySpec,
    read_contract,
    runtime_settings,
    write_contract,
)
from dualsys.timing import warn_once

__all__ = [
    "ChunkSampler",
    "FlowPolicy",
    "PolicyError",
    "PolicyNorm",
    "PolicySpec",
    "FORMS",
    "Integrator",
    "build",
    "example_inputs",
    "flow_loss",
    "load_checkpoint",
    "optimise",
    "read_contract",
    "runtime_settings",
    "save_checkpoint",
    "unvalidated_settings",
]


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
    runtime = runtime if runtime is not None else model.runtime
    write_contract(path, model.spec, model.normalisation, runtime)
    return path


def load_checkpoint(path: str | Path, expect: PolicySpec | None = None) -> FlowPolicy:
    """Load weights + contract; the horizon, action rate and dims must equal `expect`'s."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise PolicyError(f"{path}: policy weights not found")
    spec, norm, runtime = read_contract(path)
    spec_path = path.with_suffix(".json")
    if expect is not None:
        for name, where in MUST_MATCH.items():
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


class Integrator(nn.Module):
    """One chunk's flow integration: K Euler steps of a `FlowPolicy` from noise, with real-time
    chunking. The whole of it is one module so that an inference form can compile it as one
    graph (`FORMS`).

    forward(noise (1, H, A), latent (1, L), state (1, S), target (1, H, A), w (1, H, 1)) ->
    normalised chunk (1, H, A). target: the previous chunk's actions in the new chunk's slots
    (normalised), w: their weights (1 = frozen, copied exactly; between 0 and 1 = soft
    guidance; 0 = free). All-zero w is a fresh chunk: every blend below is then the identity.
    """

    def __init__(self, model: FlowPolicy, steps: int, prefix_conditioning: bool) -> None:
        super().__init__()
        self.model, self.steps, self.conditioned = model, steps, prefix_conditioning

    def forward(
        self,
        noise: torch.Tensor,
        latent: torch.Tensor,
        state: torch.Tensor,
        target: torch.Tensor,
        w: torch.Tensor,
    ) -> torch.Tensor:
        K, dt = self.steps, noise.dtype
        frozen = (w >= 1).to(dt)
        given = frozen[..., 0]  # (1, H): 1 on the frozen prefix (clean tokens at flow time 1)
        x = frozen * target + (1 - frozen) * noise if self.conditioned else noise
        for k in range(K):
            tau = k / K
            tt = torch.full((1,), tau, dtype=dt)
            # frozen and soft-guided actions onto the old chunk's flow path (inpainting)
            x = w * ((1 - tau) * noise + tau * target) + (1 - w) * x
            if self.conditioned:  # the frozen actions as clean tokens at flow time 1
                x = frozen * target + (1 - frozen) * x
                v = self.model(x, tt, latent, state, given + (1 - given) * tau)
            else:
                v = self.model(x, tt, latent, state)
            x = x + v / K
        return frozen * target + (1 - frozen) * x


#: an `Integrator` in one of its inference forms: called like its forward
Form = Callable[..., torch.Tensor]

#: forms that compute the same fp32 maths as another (a checkpoint validated with that one
#: holds for them too)
SAME_MATHS = {"fp32-ort": "fp32"}


def _int8(model: Integrator) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def _fp32_ort(model: Integrator) -> Form:
    from dualsys.system1.policy_onnx import OnnxModule

    return OnnxModule(model, example_inputs(model.model.spec), threads=torch.get_num_threads())


def example_inputs(spec: PolicySpec) -> tuple[torch.Tensor, ...]:
    """Fixed inputs of an `Integrator` (random chunk and conditioning, a 5-action RTC prefix):
    the trace of a compiled form, and its check against the module."""
    gen = torch.Generator().manual_seed(0)
    H, A = spec.horizon, spec.action_dim
    w = torch.zeros(1, H, 1)
    w[0, : min(5, H), 0] = torch.tensor([1.0, 1.0, 1.0, 0.6, 0.36])[: min(5, H)]
    return (
        torch.randn(1, H, A, generator=gen) * spec.noise_scale,
        torch.randn(1, spec.latent_dim, generator=gen),
        torch.randn(1, spec.state_dim, generator=gen),
        torch.rand(1, H, A, generator=gen) * 2 - 1,
        w,
    )


#: CPU inference forms of an `Integrator` by `policy.precision` name (the names
#: `dualsys.config.PRECISIONS` accepts): fp32 eager torch (the reference), bf16 weights, int8
#: dynamic quantisation of the Linears, and fp32-ort, the same fp32 graph run by ONNX Runtime
#: (`policy_onnx`)
FORMS = {
    "fp32": lambda model: model,
    "bf16": lambda model: model.to(torch.bfloat16),
    "int8": _int8,
    "fp32-ort": _fp32_ort,
}


def optimise(model: Integrator, precision: str) -> Form:
    """The integrator in the CPU inference form `precision` (a `FORMS` name)."""
    if precision not in FORMS:
        raise PolicyError(f"precision {precision!r}: expected one of {', '.join(FORMS)}")
    return FORMS[precision](model.eval())


class ChunkSampler:
    """Samples action chunks in joint space for one robot (normalisation, RTC inpainting)."""

    def __init__(
        self,
        model: FlowPolicy,
        spec: PolicySpec,
        cfg: RobotConfig,
        precision: str,
        norm: PolicyNorm | None = None,
    ):
        """model: the fp32 policy, run in the inference form `precision` (`FORMS`); norm: the
        checkpoint's normalisation (default: over the robot config's limits)."""
        self.spec, self.steps = spec, cfg.policy.euler_steps
        integrator = Integrator(model, self.steps, spec.prefix_conditioning)
        self.integrate = optimise(integrator, precision)
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
        tgt = np.zeros((H, A), np.float32)
        ww = np.zeros((H, 1), np.float32)
        if prefix is not None and len(prefix):
            m = min(len(prefix), H)
            tgt[:m] = self.norm.actions(prefix[:m])
            ww[:m, 0] = 1.0 if weights is None else weights[:m]
        target = torch.as_tensor(tgt)[None].to(dt)
        w = torch.as_tensor(ww)[None].to(dt)
        x = self.integrate(noise, lat, st, target, w)
        return self.norm.joints(x[0].float().clamp_(-1.0, 1.0).numpy())


def unvalidated_settings(cfg: RobotConfig, runtime: dict) -> dict[str, tuple]:
    """{setting: (config's value, checkpoint's value)} of the robot config's run-time settings
    that differ from those a checkpoint was validated with (`runtime`); a form with the same
    maths as the validated precision (`SAME_MATHS`) counts as validated."""
    differs = {
        k: (v, runtime[k])
        for k, v in runtime_settings(cfg).items()
        if k in runtime and runtime[k] != v
    }
    if SAME_MATHS.get(cfg.policy.precision) == runtime.get("precision"):
        differs.pop("precision", None)
    return differs


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
        differs = unvalidated_settings(cfg, model.runtime)
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
    sampler = ChunkSampler(model, spec, cfg, precision, model.normalisation)
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
