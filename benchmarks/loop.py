"""Loop lateness at 200 Hz: dualsys control loop vs plain time.sleep loop vs a C loop, and
the dualsys tick's work (wake to command sent) per stage, with and without prefetch.

All run on System 1's core, one after another, under the same load: the policy process
(untrained, normal priority) on the same core as in production, the echo robot and a fake
System 2 at 10 Hz, and a CPU burner on the other core. The C loop (clock_nanosleep to absolute
deadlines, SCHED_FIFO 80, mlockall: what cyclictest does) is compiled here with gcc. The dualsys
control process runs --rounds times each way, interleaved: prefetch on (the default: what
arrived during the sleep is taken before the spin to the deadline) and off
(DUALSYS_NO_PREFETCH=1: everything is received after the deadline, as before).

With --ref REF the rounds compare this tree's control process with the one of git revision
REF instead (both with prefetch, interleaved; REF runs from a temporary git worktree), e.g.
`--ref 657f3fc` for the Python tick before the compiled one.

    .venv/bin/python benchmarks/loop.py [--seconds 20] [--rounds 2] [--ref REF]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import header, pct, start_load, stop_load, write  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.system1.monitor import STAGES  # noqa: E402

C_SRC = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
int main(int argc, char **argv) {
  long period = atol(argv[1]); long n = atol(argv[2]); int core = atoi(argv[3]);
  cpu_set_t set; CPU_ZERO(&set); CPU_SET(core, &set); sched_setaffinity(0, sizeof set, &set);
  long *late = malloc(sizeof(long) * n);
  mlockall(MCL_CURRENT | MCL_FUTURE);
  struct sched_param sp = { .sched_priority = 80 };
  int fifo = sched_setscheduler(0, SCHED_FIFO, &sp) == 0;
  struct timespec next, now; clock_gettime(CLOCK_MONOTONIC, &next);
  for (long i = 0; i < n; i++) {
    next.tv_nsec += period;
    while (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    late[i] = (now.tv_sec - next.tv_sec) * 1000000000L + (now.tv_nsec - next.tv_nsec);
  }
  fprintf(stderr, "fifo=%d\n", fifo);
  for (long i = 0; i < n; i++) printf("%ld\n", late[i]);
  return 0;
}
"""

SLEEP_SRC = r"""
import os, sys, time
period, n, core = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {core})
late = []
t = time.monotonic_ns()
for i in range(n):
    t += period
    d = t - time.monotonic_ns()
    if d > 0:
        time.sleep(d / 1e9)
    late.append(time.monotonic_ns() - t)
print("\n".join(map(str, late)))
"""


def run_c(period: int, n: int, core: int, tmp: Path) -> np.ndarray:
    src, exe = tmp / "cyclic.c", tmp / "cyclic"
    src.write_text(C_SRC)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe), str(period), str(n), str(core)], capture_output=True, text=True)
    return np.array(out.stdout.split(), np.int64)


def run_sleep(period: int, n: int, core: int) -> np.ndarray:
    out = subprocess.run(
        [sys.executable, "-c", SLEEP_SRC, str(period), str(n), str(core)],
        capture_output=True,
        text=True,
        check=True,
    )
    return np.array(out.stdout.split(), np.int64)


def run_dualsys(
    seconds: float, run_dir: Path, prefetch: bool = True, code: Path | None = None
) -> dict:
    """One control process run; code: the tree to import dualsys from (default: this one)."""
    env = dict(os.environ, DUALSYS_SUPERVISED="1", DUALSYS_NO_PREFETCH="0" if prefetch else "1")
    if code is not None:
        env["PYTHONPATH"] = str(code)
    cmd = [sys.executable, "-m", "dualsys.cli", "system1", "control", "--run-dir", str(run_dir)]
    subprocess.run([*cmd, "--duration", str(seconds)], env=env, check=True)
    return json.loads((run_dir / "control.json").read_text())


ROOT = Path(__file__).resolve().parent.parent


def ref_tree(ref: str, tmp: Path) -> Path:
    """A detached git worktree of revision ref in tmp (`drop_tree` removes it)."""
    path = tmp / "ref"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(path), ref], check=True, capture_output=True)
    return path


def drop_tree(path: Path) -> None:
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "remove", "--force", str(path)], check=False)


def work_table(runs: list[tuple[str, dict]]) -> str:
    """Tick work and its stages (µs) per dualsys run, side by side."""
    text = (
        "| run | work p50 | p99 | p99.9 | max | command latency p50 | p99 | p99.9 | max "
        "| misses |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for name, d in runs:
        w, c = d["work_us"], d["command_us"]
        text += (
            f"| {name} | {w['p50']:.0f} | {w['p99']:.0f} | {w['p999']:.0f} | {w['max']:.0f} "
            f"| {c['p50']:.0f} | {c['p99']:.0f} | {c['p999']:.0f} | {c['max']:.0f} "
            f"| {d['deadline_misses']} |\n"
        )
    text += "\nPer stage, p50 / p99 / p99.9 / max (µs):\n\n"
    text += "| stage | " + " | ".join(name for name, _ in runs) + " |\n"
    text += "|---" * (len(runs) + 1) + "|\n"
    for stage in STAGES:
        cells = []
        for _, d in runs:
            s = d["tick_stages_us"][stage]
            cells.append(f"{s['p50']:.0f} / {s['p99']:.0f} / {s['p999']:.0f} / {s['max']:.0f}")
        text += f"| {stage} | " + " | ".join(cells) + " |\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ref", default=None, help="compare with this git revision's control loop")
    args = ap.parse_args()
    cfg = config.load_robot("gr1")
    period = cfg.rates.control_period_ns
    n = int(args.seconds * cfg.rates.control_hz)
    core = cfg.cores.system1
    other = 1 - core if (os.cpu_count() or 1) > 1 else 0
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        reftmp = tempfile.TemporaryDirectory()  # apart: the run directory must start empty
        ref = ref_tree(args.ref, Path(reftmp.name)) if args.ref else None
        load = start_load(tmp, other)
        try:
            time.sleep(4)  # policy up and producing chunks
            c = run_c(period, n, core, tmp) / 1000
            s = run_sleep(period, n, core) / 1000
            runs = []
            for r in range(args.rounds):
                if ref is not None:  # this tree against REF, both with prefetch
                    runs.append((f"round {r + 1}, this tree", run_dualsys(args.seconds, tmp)))
                    name = f"round {r + 1}, {args.ref}"
                    runs.append((name, run_dualsys(args.seconds, tmp, code=ref)))
                    continue
                for prefetch in (True, False):
                    name = f"round {r + 1}, prefetch {'on' if prefetch else 'off'}"
                    runs.append((name, run_dualsys(args.seconds, tmp, prefetch)))
        finally:
            stop_load(load)
            if ref is not None:
                drop_tree(ref)
            reftmp.cleanup()
    for name, lat in (
        ("C loop (clock_nanosleep, FIFO 80, mlockall)", c),
        ("plain time.sleep loop (SCHED_OTHER)", s),
    ):
        p50, p99, p999 = pct(lat)
        misses = int((lat >= period / 1000).sum())
        rows.append((name, len(lat), p50, p99, p999, float(lat.max()), misses))
    for name, d in runs:
        lat = d["lateness_us"]
        margin = d["spin_margin"].get("margin_us", "?")
        rows.append(
            (
                f"dualsys control loop ({d['scheduler']}, sleep + {margin} us spin; {name})",
                d["ticks"],
                lat["p50"],
                lat["p99"],
                lat["p999"],
                lat["max"],
                d["deadline_misses"],
            )
        )
    text = header(
        f"Loop lateness at {cfg.rates.control_hz} Hz, core {core}, under load",
        f".venv/bin/python benchmarks/loop.py --seconds {args.seconds:g} --rounds {args.rounds}"
        + (f" --ref {args.ref}" if args.ref else ""),
    )
    text += (
        "Load: policy process (untrained, int8) on the same core, echo robot + fake System 2 "
        "(10 Hz) + CPU burner on the other core. Wake-up lateness in µs. A miss: woke a whole "
        "period late (C, sleep) / command left after the next deadline (dualsys).\n\n"
        "| loop | ticks | p50 | p99 | p99.9 | max | misses |\n|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        text += (
            f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.0f} | {r[6]} |\n"
        )
    text += (
        "\n### dualsys tick work (wake to command sent) and where it goes\n\n"
        "Stages: state / latent / chunk receive (prefetch on: only what arrived after the "
        "prefetch), decide (latent age, safe state), kernel (numba step), send (command frame to "
        "ZeroMQ), loop (glue from wake to the tick), bookkeeping (after the send: Stats, "
        "histograms; not part of the work). Command latency: deadline to command sent (wake-up "
        "lateness plus work: what the robot sees). Target: work p99 <= 300 µs, max <= 1 ms.\n\n"
    )
    text += work_table(runs)
    d = runs[0][1]
    text += (
        f"\nChunks used {d['chunks']}, latent age p99 {d['latent_age_ms']['p99']:.0f} ms "
        f"({runs[0][0]}).\n"
    )
    write("loop_ref" if args.ref else "loop", text)


if __name__ == "__main__":
    main()
