"""Per-tick command computation for 44 joints: numba kernel vs numpy vs scipy splines.

All three compute the same thing per tick: cubic Hermite (Catmull-Rom) position and velocity
of the current chunk at the control time, then the velocity/acceleration/position limiter.
numpy: the same maths vectorised; scipy: a CubicHermiteSpline built once per chunk (its build
time is reported apart) and evaluated per tick, plus the numpy limiter.

    .venv/bin/python benchmarks/interp.py [--ticks 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicHermiteSpline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import header, pct, write  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.system1 import interp  # noqa: E402
from dualsys.system1.interp import KernelState  # noqa: E402


def tangents(a: np.ndarray) -> np.ndarray:
    m = np.empty_like(a)
    m[1:-1] = 0.5 * (a[2:] - a[:-2])
    m[0] = a[1] - a[0]
    m[-1] = a[-1] - a[-2]
    return m


def limiter(q, v, p, pv, L, dt):
    """The kernel's limiter in numpy (same maths, vectorised)."""
    a = L["accel"]

    def brake(d):
        d = np.maximum(d, 0.0)
        return a * (-1.5 * dt + np.sqrt(2.25 * dt * dt + 2.0 * d / a))

    e = p - q
    vw = e / dt
    vb = np.abs(pv) + brake(np.abs(e))
    vw = np.clip(vw, -vb, vb)
    vw = np.minimum(vw, brake(L["max"] - q))
    vw = np.maximum(vw, -brake(q - L["min"]))
    vw = np.clip(vw, v - a * dt, v + a * dt)
    vw = np.clip(vw, -L["velocity"], L["velocity"])
    qn = np.clip(q + vw * dt, L["min"], L["max"])
    return qn, (qn - q) / dt


def numpy_tick(t, acts, m, t0, dtn, ctrl, L, q, v, dt):
    s = (t - t0) / dtn
    k = min(max(int(s), 0), len(acts) - 2)
    u = s - k
    h = np.array([2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2])
    d = np.array([6 * u**2 - 6 * u, 3 * u**2 - 4 * u + 1, -6 * u**2 + 6 * u, 3 * u**2 - 2 * u])
    p = L["default"].copy()
    pv = np.zeros_like(p)
    p[ctrl] = h[0] * acts[k] + h[1] * m[k] + h[2] * acts[k + 1] + h[3] * m[k + 1]
    pv[ctrl] = (d[0] * acts[k] + d[1] * m[k] + d[2] * acts[k + 1] + d[3] * m[k + 1]) / (dtn * 1e-9)
    if not (np.isfinite(p).all() and np.isfinite(pv).all()):
        p, pv = q.copy(), np.zeros_like(q)
    return limiter(q, v, p, pv, L, dt)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=20000)
    args = ap.parse_args()
    cfg = config.load_robot("gr1")
    L = cfg.limits()
    ctrl = cfg.controlled_indices
    H, tick = cfg.policy.chunk_horizon, cfg.rates.control_period_ns
    dtn = 1_000_000_000 // cfg.rates.action_hz
    dt = tick * 1e-9
    rng = np.random.default_rng(0)
    mid = ((L["min"] + L["max"]) / 2)[ctrl]
    acts = mid + 0.1 * np.cumsum(rng.standard_normal((H, len(ctrl))) * 0.1, axis=0)
    span = (H - 1) * dtn
    times = [(i * tick) % span for i in range(args.ticks)]

    k = KernelState(L, ctrl, H, tick)
    k.actions[:] = acts
    k.I[interp.N_ACT], k.I[interp.T0], k.I[interp.DT] = H, 0, dtn
    k.I[interp.MODE] = interp.MODE_CHUNK
    k.step(0)
    res = {}
    ts = np.empty(args.ticks)
    for i, t in enumerate(times):
        a = time.perf_counter_ns()
        k.step(t)
        ts[i] = time.perf_counter_ns() - a
    res["numba kernel (`@njit(cache=True, nogil=True)`)"] = ts / 1000

    m = tangents(acts)
    q, v = L["default"].copy(), np.zeros(len(L["default"]))
    for i, t in enumerate(times):
        a = time.perf_counter_ns()
        q, v = numpy_tick(t, acts, m, 0, dtn, ctrl, L, q, v, dt)
        ts[i] = time.perf_counter_ns() - a
    res["numpy (same maths, vectorised)"] = ts / 1000

    tgrid = np.arange(H) * dtn * 1e-9
    builds = []
    for _ in range(200):
        a = time.perf_counter_ns()
        spl = CubicHermiteSpline(tgrid, acts, tangents(acts) / (dtn * 1e-9), axis=0)
        dspl = spl.derivative()
        builds.append(time.perf_counter_ns() - a)
    q, v = L["default"].copy(), np.zeros(len(L["default"]))
    for i, t in enumerate(times):
        a = time.perf_counter_ns()
        p = L["default"].copy()
        pv = np.zeros_like(p)
        p[ctrl] = spl(t * 1e-9)
        pv[ctrl] = dspl(t * 1e-9)
        q, v = limiter(q, v, p, pv, L, dt)
        ts[i] = time.perf_counter_ns() - a
    res["scipy CubicHermiteSpline eval + numpy limiter"] = ts / 1000

    text = header(
        f"Per-tick command kernel, {cfg.n_joints} joints ({len(ctrl)} from the chunk)",
        f".venv/bin/python benchmarks/interp.py --ticks {args.ticks}",
    )
    text += (
        "Time per tick in µs (Hermite upsampling + NaN guard + position/velocity/acceleration "
        "limits), called from Python as the control loop does, warm caches.\n\n"
        "| implementation | p50 | p99 | p99.9 | vs numba (p50) |\n|---|---|---|---|---|\n"
    )
    base = pct(res["numba kernel (`@njit(cache=True, nogil=True)`)"])[0]
    for name, v_ in res.items():
        p50, p99, p999 = pct(v_)
        text += f"| {name} | {p50:.2f} | {p99:.2f} | {p999:.2f} | {p50 / base:.1f}x |\n"
    b50, b99, _ = pct(np.array(builds) / 1000)
    text += f"\nscipy spline build per chunk (not per tick): p50 {b50:.0f} µs, p99 {b99:.0f} µs.\n"
    write("interp", text)


if __name__ == "__main__":
    main()
