"""Where a control tick's transient allocations come from, call by call, under tracemalloc,
and what the live loop's compiled ticks allocate (nothing).

Each row of the first table calls one piece of the Python tick's code as it calls it, many
times, and reports the largest transient (peak traced bytes during the call, minus the
measuring harness's own) and the net growth over all calls. A Python tick cannot be
allocation-free while it creates ints of nanosecond times and crosses into numba and pyzmq.
The second table runs the live loop's compiled ticks (`ControlLoop.run_ticks`, following a
chunk, the echo robot's state arriving every tick, commands to a subscriber) and the Python
tick (`ControlLoop.update`) the same way (dualsys.testing.control_rig.steady_allocation).

    .venv/bin/python benchmarks/alloc.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import RESULTS, header  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.system1.interp import KernelState  # noqa: E402
from dualsys.system1.monitor import StageBreakdown  # noqa: E402
from dualsys.system1.wire import CommandEncoder  # noqa: E402
from dualsys.testing.control_rig import ControlRig, follow, steady_allocation  # noqa: E402


def measure(fn: Callable[[], object], calls: int) -> tuple[int, int]:
    """(largest transient bytes of one call, net bytes kept over all calls)."""
    for _ in range(200):  # warm caches, compiled code and tracemalloc's own tables
        fn()
    worst = 0
    start, _ = tracemalloc.get_traced_memory()
    for _ in range(calls):
        cur, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
        worst = max(worst, peak - cur)
    end, _ = tracemalloc.get_traced_memory()
    return worst, end - start


def loop_table(cfg: config.RobotConfig, ticks: int) -> str:
    """The compiled ticks against the Python tick, as a markdown section."""
    with tempfile.TemporaryDirectory() as tmp:
        rig = ControlRig(cfg, Path(tmp))
        try:
            rig.start_robot(120)
            follow(rig, 120)
            a = steady_allocation(rig, ticks=ticks, runs=10)
        finally:
            rig.close()
    per_tick = max(a["compiled"] - a["call"], 0) / ticks
    return (
        f"\n### The whole tick: {ticks} ticks in one call\n\n"
        f"Peak traced bytes of one call (the most of 10 runs with no miss), and the bytes kept "
        f"over the 10 runs ({a['tick1'] - a['tick0']} compiled ticks, "
        f"{a['frames1'] - a['frames0']} state frames taken). The compiled call's own "
        "argument boxing is the peak of a call running no tick.\n\n"
        "| tick | peak, 0 ticks (B) | peak (B) | beyond the call's own, per tick (B) "
        "| kept (B) |\n|---|---|---|---|---|\n"
        f"| compiled (`run_ticks`) | {a['call']} | {a['compiled']} | {per_tick:.1f} "
        f"| {a['kept'] - a['kept_call']} beyond the calls' own |\n"
        f"| Python (`update`, one call per tick) | 0 | {a['python']} "
        "| every tick: its ints and call boxing (first table), freed before the next | - |\n"
    )


def main() -> None:
    """Measure each piece and write benchmarks/results/alloc.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--ticks", type=int, default=200, help="ticks per measured loop call")
    args = ap.parse_args()
    cfg = config.load_robot("gr1")
    lim = cfg.limits()
    k = KernelState(
        lim, cfg.controlled_indices, cfg.policy.chunk_horizon, cfg.rates.control_period_ns
    )
    stages = StageBreakdown()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind("inproc://alloc")
    enc = CommandEncoder(pub, cfg.n_joints, "control")
    q, dq = lim["default"].copy(), np.zeros(cfg.n_joints)
    t = time.monotonic_ns()
    big = 1 << 40  # a nanosecond time: beyond CPython's cached small ints
    rows: list[tuple[str, Callable[[], object]]] = [
        ("harness (empty lambda)", lambda: None),
        ("time.monotonic_ns()", time.monotonic_ns),
        ("time.monotonic() (float: free list)", time.monotonic),
        ("int arithmetic on ns times (t + big)", lambda: t + big),
        ("numba kernel step (7 arrays, 1 int)", lambda: k.step(t)),
        ("numba stage record (3 arrays)", stages.record),
        ("command send (compiled fill + libzmq send)", lambda: enc.send(q, dq, "run", 1, t)),
    ]
    tracemalloc.start()
    try:
        results = [(name, *measure(fn, args.calls)) for name, fn in rows]
    finally:
        tracemalloc.stop()
        pub.close()
        ctx.term()
    base = results[0][1]
    out = header(
        "Transient allocations of the tick's pieces (tracemalloc)",
        f".venv/bin/python benchmarks/alloc.py --calls {args.calls} --ticks {args.ticks}",
    )
    out += (
        "Largest transient per call (peak traced bytes during the call minus the harness's "
        f"{base} B) and net bytes kept after {args.calls} calls. Freed before the call returns;"
        " the whole tick's figure is `tests/system1/test_s1_control.py`'s tracemalloc test.\n\n"
        "| piece | transient per call (B) | kept after all calls (B) |\n|---|---|---|\n"
    )
    for name, worst, kept in results[1:]:
        out += f"| {name} | {max(worst - base, 0)} | {kept} |\n"
    out += loop_table(cfg, args.ticks)
    (RESULTS / "alloc.md").write_text(out)
    print(out)


if __name__ == "__main__":
    main()
