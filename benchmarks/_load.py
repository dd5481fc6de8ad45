"""Shared helpers of the System 1 benchmarks: the load set, percentiles, markdown tables."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def header(title: str, command: str) -> str:
    """Markdown header naming date, machine and command."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"## {title}\n\n{date}, {os.cpu_count()} vCPU ({cpu}), kernel {platform.release()}, "
        f"Python {platform.python_version()}.\nCommand: `{command}`\n\n"
    )


def pct(values: np.ndarray, ps=(50, 99, 99.9)) -> list[float]:
    """Percentiles (nearest-rank on the sorted data)."""
    v = np.sort(np.asarray(values, np.float64))
    if not len(v):
        return [float("nan")] * len(ps)
    return [float(v[min(len(v) - 1, int(np.ceil(p / 100 * len(v))) - 1)]) for p in ps]


def start_load(run_dir: Path, burner_core: int, policy: bool = True) -> list[subprocess.Popen]:
    """Echo robot + fake System 2 (10 Hz) + policy (untrained) + a CPU burner on burner_core."""
    py = sys.executable
    env = dict(os.environ, DUALSYS_SUPERVISED="1")
    rd = str(run_dir)
    dn = subprocess.DEVNULL
    procs = [
        subprocess.Popen([py, "-m", "dualsys.testing.echo_robot", "--run-dir", rd], env=env),
        subprocess.Popen([py, "-m", "dualsys.testing.latents", "--run-dir", rd], env=env),
        subprocess.Popen(["taskset", "-c", str(burner_core), "sh", "-c", "while :; do :; done"]),
    ]
    if policy:
        procs.append(
            subprocess.Popen(
                [
                    py,
                    "-m",
                    "dualsys.cli",
                    "system1",
                    "policy",
                    "--run-dir",
                    rd,
                    "--untrained-policy",
                ],
                env=env,
                stderr=dn,
            )
        )
    return procs


def stop_load(procs: list[subprocess.Popen]) -> None:
    """SIGTERM everything started by start_load and wait."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def write(name: str, text: str) -> Path:
    """Write benchmarks/results/<name>.md and echo it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text)
    return path
