"""Soak: a long `dualsys up` run with resident memory and open file descriptors sampled.

Samples every process's RSS (from /proc/PID/status) and open fds (/proc/PID/fd) every few
seconds, fits a line to the second half of the run (after warm-up) and reports the growth per
hour next to the run's own budgets. Not part of CI (10 minutes by default).

    .venv/bin/python benchmarks/soak.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROLES = ("robot", "system2", "policy", "control", "supervisor")


def sample(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open fds) of one process; (nan, -1) when it is gone."""
    try:
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return float("nan"), -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "soak.md"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dualsys-soak-"))
    run_dir, report = tmp / "run", tmp / "report.json"
    cmd = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--headless"]
    cmd += ["--run-dir", str(run_dir), "--report", str(report), "--log-dir", str(tmp / "logs")]
    cmd += ["--duration", str(args.minutes * 60)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run_dir / "pids.json").exists() or len(
        json.loads((run_dir / "pids.json").read_text())
    ) < len(ROLES):
        time.sleep(0.5)
    time.sleep(15)  # start-up
    pids = json.loads((run_dir / "pids.json").read_text())
    t0 = time.monotonic()
    rows: dict[str, list[tuple[float, float, int]]] = {r: [] for r in ROLES}
    print(f"soak: {args.minutes:g} min, sampling every {args.every:g} s ...", flush=True)
    while proc.poll() is None:
        t = time.monotonic() - t0
        for role in ROLES:
            rss, fds = sample(pids[role])
            rows[role].append((t, rss, fds))
        if len(rows["control"]) % 12 == 0:
            print(f"  {t / 60:4.1f} min  control RSS {rows['control'][-1][1]:.1f} MiB", flush=True)
        time.sleep(args.every)
    proc.wait()
    write(args, rows, json.loads(report.read_text()) if report.exists() else {})


def write(args, rows: dict[str, list[tuple[float, float, int]]], report: dict) -> None:
    """Fit trends over the second half and write the markdown table."""
    lines = [
        f"### Soak: `dualsys up --robot gr1` for {args.minutes:g} min "
        f"({datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} vCPU, "
        f"`python benchmarks/soak.py --minutes {args.minutes:g}`)",
        "",
        "RSS and open fds sampled every "
        f"{args.every:g} s; trend = least-squares slope over the second half of the run.",
        "",
        "| process | samples | RSS start MiB | RSS end MiB | RSS trend MiB/h | fds start | fds end "
        "| fd trend /h |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for role, data in rows.items():
        arr = np.array([d for d in data if d[2] >= 0], dtype=float)
        if len(arr) < 4:
            lines.append(f"| {role} | {len(arr)} | - | - | - | - | - | - |")
            continue
        half = arr[len(arr) // 2 :]
        rss_slope = np.polyfit(half[:, 0], half[:, 1], 1)[0] * 3600
        fd_slope = np.polyfit(half[:, 0], half[:, 2], 1)[0] * 3600
        lines.append(
            f"| {role} | {len(arr)} | {arr[0, 1]:.1f} | {arr[-1, 1]:.1f} | {rss_slope:+.2f} | "
            f"{arr[0, 2]:.0f} | {arr[-1, 2]:.0f} | {fd_slope:+.1f} |"
        )
    s1 = report.get("system1") or {}
    if s1:
        lines += [
            "",
            f"Run: clean exit {report.get('clean_exit')}, System 1 {s1.get('ticks')} ticks, "
            f"{s1.get('deadline_misses')} misses (rate {s1.get('miss_rate', 0):.5f}), "
            f"budgets ok: {report.get('budget', {}).get('ok')}.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
