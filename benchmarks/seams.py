"""Seam quality: real-time chunking vs executing chunks back to back (same policy, latents).

A small flow-matching policy (the dualsys FlowPolicy, width 128 x 2 layers) is first trained
here for a few hundred steps on synthetic, deliberately bimodal chunks: from the current pose,
the controlled joints move on a straight line in one of two directions picked at random. The
state does not tell which, so two chunks sampled with different noise may disagree: exactly
the "arm steps back at each new chunk" situation. Then the 200 Hz loop is simulated in
virtual time (same seeds, same latent, same inference delay for every variant):

- back to back (GR00T / openpi servers): a new chunk starts at its arrival, executed from 0;
- RTC: the policy freezes the actions that run during inference and inpaints the rest;
- each with and without the dualsys seam blend;
- RTC with a second policy trained the same way but with prefix conditioning (training-time
  action conditioning: it sees the frozen actions as clean tokens), with the seam blend.

Commands are taken from the kernel with the limiter opened wide, so seams show unfiltered.
Jumps are |change of commanded velocity| (rad/s) and |change of acceleration| (rad/s²)
between consecutive ticks, at seam ticks vs. elsewhere.

    .venv/bin/python benchmarks/seams.py [--train-steps 400] [--seconds 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import header, write  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.system1 import interp  # noqa: E402
from dualsys.system1 import policy as P  # noqa: E402, N812
from dualsys.system1.chunks import Chunk, back_to_back, needs_replan, plan_next  # noqa: E402
from dualsys.system1.control import BLEND_NS  # noqa: E402
from dualsys.system1.interp import KernelState  # noqa: E402


def synth_batch(n: int, H: int, A: int, gen: torch.Generator):
    """Bimodal straight-line chunks from a random start pose (normalised units)."""
    x0 = torch.rand(n, 1, A, generator=gen) - 0.5
    sign = torch.where(torch.rand(n, 1, 1, generator=gen) < 0.5, -1.0, 1.0)
    speed = 0.3 + 0.1 * torch.rand(n, 1, A, generator=gen)
    ramp = torch.arange(H).float()[None, :, None] / H
    return x0 + sign * speed * ramp, x0[:, 0]


def train(spec: P.PolicySpec, steps: int, prefix_max: int = 0) -> P.FlowPolicy:
    torch.manual_seed(0)
    model = P.FlowPolicy(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    lat = torch.zeros(1, spec.latent_dim)
    half = spec.state_dim // 2
    for _ in range(steps):
        a, x0 = synth_batch(128, spec.horizon, spec.action_dim, gen)
        state = torch.zeros(len(a), spec.state_dim)
        state[:, : spec.action_dim] = x0  # controlled joints first (see `state_of`)
        assert spec.action_dim <= half
        loss = P.flow_loss(model, a, lat.expand(len(a), -1), state, gen, prefix_max)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def simulate(cfg, sampler, rtc: bool, blend: bool, seconds: float, delay_ns: int):
    L = cfg.limits()
    wide = dict(L, velocity=L["velocity"] * 1e6, accel=L["accel"] * 1e6)
    ctrl = cfg.controlled_indices
    H, tick = cfg.policy.chunk_horizon, cfg.rates.control_period_ns
    dt = 1_000_000_000 // cfg.rates.action_hz
    k = KernelState(wide, ctrl, H, tick)
    k.L[interp.L_MIN] -= 10  # no position clamping either: show the raw seams
    k.L[interp.L_MAX] += 10
    sampler.seed(123)
    lat = np.zeros(cfg.system2.latent_dim, np.float32)
    cur = pending = None
    deliver = 0
    n = int(seconds * 1e9 / tick)
    qs, seams = np.zeros((n, k.n)), []
    for i in range(n):
        t = i * tick
        if pending is None and needs_replan(cur, t, cfg.policy.replan_below):
            q = k.q.copy()
            plan = (
                plan_next(cur, t, delay_ns, dt, hold=q[ctrl]) if rtc else back_to_back(t, delay_ns)
            )
            acts = sampler.sample(lat, q, q * 0, plan.prefix if plan.frozen else None, plan.weights)
            pending, deliver = Chunk(acts, plan.t0_ns, dt), t + delay_ns
        if pending is not None and t >= deliver:
            cur, pending = pending, None
            k.actions[:] = cur.actions
            k.I[interp.N_ACT], k.I[interp.T0], k.I[interp.DT] = H, cur.t0_ns, dt
            k.I[interp.MODE] = interp.MODE_CHUNK
            if blend and i:
                k.blend(t - tick, BLEND_NS)
            else:
                k.I[interp.BLEND_T] = 0
            seams.append(i)
        k.step(t)
        qs[i] = k.q
    v = np.diff(qs, axis=0) / (tick * 1e-9)
    a = np.diff(v, axis=0) / (tick * 1e-9)
    dv = np.abs(np.diff(v, axis=0))[:, ctrl].max(axis=1)  # index j: change v[j] -> v[j+1]
    da = np.abs(np.diff(a, axis=0))[:, ctrl].max(axis=1)
    s = np.array([j for j in seams[2:] if 2 <= j < len(dv)])
    at = np.zeros(len(dv), bool)
    for j in s:
        at[max(0, j - 2) : j + 1] = True  # the tick before, at and after the switch
    w = 12  # 60 ms before / after each seam: did the motion reverse ("step back")?
    rev = []
    for j in s:
        if j - w >= 0 and j + w < len(v):
            before = v[j - w : j, ctrl].mean(axis=0)
            after = v[j + 1 : j + 1 + w, ctrl].mean(axis=0)
            rev.append(np.mean(np.sign(before) != np.sign(after)))
    return {
        "seams": len(s),
        "reversed": float(np.mean(rev)) if rev else 0.0,
        "rms_acc": float(np.sqrt((a[:, ctrl] ** 2).mean())),
        "dv_seam": dv[at].max(),
        "dv_other": np.percentile(dv[~at][4:], 99),
        "da_seam": da[at[: len(da)]].max(),
        "da_other": np.percentile(da[~at[: len(da)]][4:], 99),
        "vmax": np.abs(v[:, ctrl]).max(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = config.load_robot("gr1")
    cfg = dataclasses.replace(base, policy=dataclasses.replace(base.policy, width=128, layers=2))
    spec = P.PolicySpec.for_robot(cfg)
    t = time.time()
    model = train(spec, args.train_steps)
    train_s = time.time() - t
    spec_pc = dataclasses.replace(spec, prefix_conditioning=True)
    model_pc = train(spec_pc, args.train_steps, prefix_max=cfg.policy.chunk_horizon // 2)
    ctrl = cfg.controlled_indices

    def make_sampler(model, spec) -> P.ChunkSampler:
        # the state vector puts q (all joints) first; keep the controlled joints' pose in front
        sampler = P.ChunkSampler(model, spec, cfg, "fp32")
        orig = sampler.state_vector

        def state_of(q, dq):
            v = orig(q, dq)
            out = np.zeros_like(v)
            out[: len(ctrl)] = v[ctrl]
            return out

        sampler.state_vector = state_of
        return sampler

    sampler, sampler_pc = make_sampler(model, spec), make_sampler(model_pc, spec_pc)
    lat_ms = []
    q = cfg.limits()["default"]
    for _ in range(20):
        a = time.perf_counter()
        sampler.sample(np.zeros(cfg.system2.latent_dim, np.float32), q, q * 0)
        lat_ms.append((time.perf_counter() - a) * 1000)
    delay_ns = int(np.percentile(lat_ms, 90) * 1e6) + 10_000_000  # inference + hand-over
    rows = []
    for name, rtc, blend, smp in (
        ("back to back (GR00T / openpi style)", False, False, sampler),
        ("back to back + dualsys seam blend", False, True, sampler),
        ("real-time chunking (inpainting), no blend", True, False, sampler),
        ("real-time chunking (inpainting) + seam blend", True, True, sampler),
        ("real-time chunking, prefix-conditioned policy + seam blend", True, True,
         sampler_pc),
    ):  # fmt: skip
        rows.append((name, simulate(cfg, smp, rtc, blend, args.seconds, delay_ns)))
    text = header(
        "Seam quality: real-time chunking vs back-to-back chunks",
        f".venv/bin/python benchmarks/seams.py --train-steps {args.train_steps} "
        f"--seconds {args.seconds:g}",
    )
    text += (
        f"Policy: FlowPolicy width {spec.width} x {spec.layers} layers trained here for "
        f"{args.train_steps} steps ({train_s:.0f} s) on bimodal synthetic chunks (and a second "
        f"one the same way with prefix conditioning, up to {cfg.policy.chunk_horizon // 2} "
        "given actions); K="
        f"{cfg.policy.euler_steps}, H={spec.horizon} at {cfg.rates.action_hz} Hz, replan below "
        f"{cfg.policy.replan_below}; simulated inference + hand-over delay {delay_ns / 1e6:.0f} ms;"
        f" {args.seconds:g} s of 200 Hz control per variant, same seeds and latent. Limiter "
        "opened wide. Max over controlled joints; 'elsewhere' is the p99 over non-seam ticks; "
        "'reversing': share of joints whose mean velocity over the 60 ms after a seam has the "
        "opposite sign of the 60 ms before (the arm stepping back).\n\n"
        "| variant | seams | max velocity jump at seams (rad/s) | elsewhere p99 | "
        "max accel jump at seams (rad/s²) | elsewhere p99 | joints reversing at seams | "
        "RMS accel (rad/s²) |\n|---|---|---|---|---|---|---|---|\n"
    )
    for name, r in rows:
        text += (
            f"| {name} | {r['seams']} | {r['dv_seam']:.3f} | {r['dv_other']:.3f} | "
            f"{r['da_seam']:.1f} | {r['da_other']:.1f} | {100 * r['reversed']:.0f}% | "
            f"{r['rms_acc']:.1f} |\n"
        )
    write("seams", text)


if __name__ == "__main__":
    main()
