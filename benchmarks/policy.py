"""Policy chunk latency on one thread: fp32 eager vs bf16 vs int8 dynamic quantisation.

Same untrained network (robots/gr1.toml sizes), same inputs, K Euler steps from the config,
with real-time-chunking inpainting of a 5-action prefix (as the policy process runs it).

    .venv/bin/python benchmarks/policy.py [--n 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import header, pct, write  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.system1 import policy as P  # noqa: E402, N812


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    cfg = config.load_robot("gr1")
    torch.set_num_threads(1)
    spec = P.PolicySpec.for_robot(cfg)
    torch.manual_seed(0)
    base = P.FlowPolicy(spec).eval()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    rng = np.random.default_rng(0)
    lat = rng.standard_normal(cfg.system2.latent_dim).astype(np.float32)
    q = cfg.limits()["default"]
    ctrl = cfg.controlled_indices
    prefix = np.tile(q[ctrl], (5, 1)).astype(np.float32)
    w = np.array([1, 1, 1, 0.6, 0.36], np.float32)
    rows, outs = [], {}
    for prec in ("fp32", "bf16", "int8"):
        model = P.FlowPolicy(spec)
        model.load_state_dict(state)
        s = P.ChunkSampler(P.optimise(model, prec), spec, cfg, prec)
        for _ in range(5):
            s.sample(lat, q, q * 0, prefix, w)
        ts = []
        for _ in range(args.n):
            t = time.perf_counter()
            s.sample(lat, q, q * 0, prefix, w)
            ts.append((time.perf_counter() - t) * 1000)
        s.seed(1)
        outs[prec] = s.sample(lat, q, q * 0, prefix, w)
        rows.append((prec, *pct(np.array(ts), (50, 99))))
    text = header(
        f"Policy chunk latency, 1 thread ({P.n_params(base) / 1e6:.1f}M params, width "
        f"{spec.width}, {spec.layers} layers, H={spec.horizon}, K={cfg.policy.euler_steps})",
        f".venv/bin/python benchmarks/policy.py --n {args.n}",
    )
    text += (
        f"{args.n} chunks per form, untrained weights (latency does not depend on training), "
        "RTC inpainting on. Chosen form (robots/gr1.toml `policy.precision`): "
        f"**{cfg.policy.precision}**.\n\n"
        "| form | median ms | p99 ms | speed-up (median) | max abs diff vs fp32 (normalised) |\n"
        "|---|---|---|---|---|\n"
    )
    lim = cfg.limits()
    half = ((lim["max"] - lim["min"]) / 2)[ctrl]
    for prec, p50, p99 in rows:
        diff = float(np.abs((outs[prec] - outs["fp32"]) / half).max())
        text += f"| {prec} | {p50:.2f} | {p99:.2f} | {rows[0][1] / p50:.2f}x | {diff:.3f} |\n"
    write("policy", text)


if __name__ == "__main__":
    main()
