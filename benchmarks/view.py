"""System 1's budgets with and without the web view: `dualsys up` runs of the same length,
alternating plain and `--view` (a headless Chromium showing the page during the --view runs,
when one is installed: the viewer then really streams), side by side from the run reports.

    .venv/bin/python benchmarks/view.py [--seconds 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import header, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(seconds: float, view: bool, tmp: Path, browser: bool = True) -> dict:
    """One `dualsys up --untrained` run; returns its report (and whether a browser watched)."""
    report = tmp / f"report-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--untrained"]
    argv += ["--headless", "--duration", str(seconds), "--run-dir", str(tmp / "run")]
    argv += ["--report", str(report), "--log-dir", str(tmp / "logs")]
    watched = {"browser": False}
    thread = None
    (tmp / "run" / "viewer.url").unlink(missing_ok=True)
    if view:
        argv += ["--view", "--view-port", str(free_port()), "--view-grpc-port", str(free_port())]
    up = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if view:
        from dualsys.testing.browser import find_chromium, screenshot

        url_file = tmp / "run" / "viewer.url"
        end = time.monotonic() + 120
        while not url_file.exists() and up.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        if browser and find_chromium() and url_file.exists():
            url = url_file.read_text().strip()

            def watch() -> None:
                try:
                    watched["browser"] = True
                    screenshot(url, tmp / "view.png", wait_s=seconds * 0.6, nice=19)
                except Exception as exc:  # the benchmark still reports the run
                    print(f"browser: {exc}", file=sys.stderr)

            thread = threading.Thread(target=watch, daemon=True)
            thread.start()
    up.wait()
    if thread is not None:
        thread.join(timeout=120)  # the browser is closed before the next run starts
    out = json.loads(report.read_text())
    out["browser"] = watched["browser"]
    return out


def row(name: str, r: dict) -> str:
    s1, s2 = r["system1"], r["system2"]
    if s1.get("miss_rate") is None:  # System 1 wrote no summary (the run failed)
        return f"| {name} | run failed: {r.get('reason', '?')} | | | | | | |"
    lat, work, age = s1["lateness_us"], s1["work_us"], s1["latent_age_ms"]
    broken = [k for k, c in r["budget"]["checks"].items() if not c["ok"]]
    return (
        f"| {name} | {s1['ticks']} | {s1['deadline_misses']} ({100 * s1['miss_rate']:.3f}%) | "
        f"{lat['p99']:.0f} / {lat['max']:.0f} | {work['p99']:.0f} | {age['p50']:.0f} / "
        f"{age['p99']:.0f} | {s2['rate_hz']:.2f} | {', '.join(broken) or 'all held'} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    lines = [
        header("System 1 with and without the web view", "benchmarks/view.py"),
        f"`dualsys up --robot gr1 --untrained` for {args.seconds:.0f} s per run, rounds "
        "alternating: no view; `--view` (the viewer process streaming, no page open); `--view` "
        "with a headless Chromium (nice 19; a browser belongs on another computer) showing the "
        "page with software rendering on the same 2-core machine for most of the run. "
        "Lateness and work in µs, latent age in ms. Load average of the machine (shared with "
        "other jobs) at the end: LOADAVG.",
        "",
        "| run | ticks | misses | lateness p99 / max | work p99 | latent age p50 / p99 | "
        "System 2 Hz | budgets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="dualsys-bench-view-") as d:
        for i in range(args.rounds):
            for view, browser in ((False, False), (True, False), (True, True)):
                r = run(args.seconds, view, Path(d), browser)
                name = f"round {i + 1}: " + (
                    "--view" + (" + browser" if r["browser"] else "") if view else "no view"
                )
                lines.append(row(name, r))
                print(lines[-1], flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = [line.replace("LOADAVG", " / ".join(load)) for line in lines]
    write("view", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
