"""One System 2 server for N robots (batched) vs N separate System 2 processes, side by side.

For each N: (a) one `dualsys system2 serve` and N robot stand-ins (dualsys.testing.fleet_robot:
128x128 frames at 10 Hz, states at 20 Hz, each over its own CURVE DEALER with its own key);
(b) N servers limited to one robot each (`--max-robots 1`, the per-robot service: same
encoder, unbatched, one process per robot), one stand-in each. Per robot: latents/s and latent
age on arrival (arrival minus the send time of the frame it came from, the robot's clock
only); server CPU % (all server processes, of one core) from /proc over the window.

.venv/bin/python benchmarks/fleet.py --duration 12 --ns 1,2,4,8,16
writes benchmarks/results/fleet.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dualsys.bus.keyfiles import generate
from dualsys.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _keys(tmp: Path, n: int) -> Path:
    keys = tmp / "keys"
    cli_main(["keys", "generate", "--out", str(keys)])
    for role in ("robot", "operator"):
        (keys / "allowed" / role).mkdir(parents=True, mode=0o700)
    for i in range(n):
        generate(keys, f"r{i}")
        shutil.copy(keys / f"r{i}.key", keys / "allowed" / "robot" / f"r{i}.key")
    return keys


def _server(keys: Path, port: int, run_dir: Path, max_robots: int) -> subprocess.Popen:
    sets = f"security.curve=true;security.keys_dir={keys};security.authorized_dir=allowed"
    env = dict(os.environ, DUALSYS_SET=sets, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "dualsys.cli", "system2", "serve", "--robot", "gr1"]
    argv += ["--untrained", "--bind", f"tcp://127.0.0.1:{port}", "--run-dir", str(run_dir)]
    argv += ["--max-robots", str(max_robots)]
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _ready(servers: list[subprocess.Popen], dirs: list[Path]) -> None:
    end = time.monotonic() + 300
    for p, d in zip(servers, dirs, strict=True):
        log = d.parent / f"{d.name}.log"
        while "serving gr1" not in log.read_text():
            if p.poll() is not None or time.monotonic() > end:
                raise RuntimeError(log.read_text())
            time.sleep(0.2)


def case(tmp: Path, keys: Path, n: int, batched: bool, duration: float) -> dict[str, float]:
    """Run one case; per-robot means/worst and the servers' CPU share."""
    ports = [_port() for _ in range(1 if batched else n)]
    dirs = [tmp / f"{'b' if batched else 's'}{n}_{i}" for i in range(len(ports))]
    servers = [_server(keys, p, d, n if batched else 1) for p, d in zip(ports, dirs, strict=True)]
    outs = [tmp / f"{'b' if batched else 's'}{n}_r{i}.json" for i in range(n)]
    robots = []
    try:
        _ready(servers, dirs)
        for i in range(n):
            port = ports[0] if batched else ports[i]
            argv = [sys.executable, "-m", "dualsys.testing.fleet_robot"]
            argv += ["--server", f"tcp://127.0.0.1:{port}", "--keys-dir", str(keys)]
            argv += ["--key", f"r{i}", "--duration", str(duration + 4), "--out", str(outs[i])]
            # niced: the stand-ins share these 2 vCPUs but model robots on their own
            # computers; without it the scheduler splits the CPU per process, which starves
            # one batched server among N stand-ins and favours N separate servers
            robots.append(subprocess.Popen(argv, cwd=ROOT, preexec_fn=lambda: os.nice(19)))
        time.sleep(3)  # robots connect and import
        cpu0, t0 = sum(_cpu_s(p.pid) for p in servers), time.monotonic()
        time.sleep(duration)
        cpu = (sum(_cpu_s(p.pid) for p in servers) - cpu0) / (time.monotonic() - t0)
        for r in robots:
            r.wait(60)
    finally:
        for p in servers:
            p.send_signal(signal.SIGTERM)
        for p in servers:
            p.wait(30)
    res = [json.loads(o.read_text()) for o in outs]
    rates = [r["rate_hz"] for r in res]
    batches = [json.loads((d / "server.json").read_text())["batch"] for d in dirs]
    return {
        "rate_mean": sum(rates) / n,
        "rate_min": min(rates),
        "age_p50": sum(r["age_ms"]["p50"] for r in res) / n,
        "age_p99": max(r["age_ms"]["p99"] for r in res),
        "cpu_pct": 100 * cpu,
        "batch_p50": batches[0]["p50"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--ns", default="1,2,4,8,16")
    ap.add_argument("--separate-max", type=int, default=16, help="largest N for (b)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fleet.md"))
    a = ap.parse_args()
    ns = [int(x) for x in a.ns.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="dualsys-fleet-"))
    keys = _keys(tmp, max(ns))
    rows = []
    for n in ns:
        b = case(tmp, keys, n, True, a.duration)
        s = case(tmp, keys, n, False, a.duration) if n <= a.separate_max else None
        rows.append((n, b, s))
        print(n, b, s, flush=True)
    hold = [n for n, b, _ in rows if b["rate_min"] >= 7.0]
    lines = [
        "## System 2 fleet: one batched server vs one System 2 process per robot",
        "",
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} vCPU VM (no GPU), `.venv/bin/python "
        f"benchmarks/fleet.py --duration {a.duration:g} --ns {a.ns}`; robot gr1, builtin encoder "
        "(MiniLM cached + MobileNetV2 at 128x128 + untrained fusion head), torch 1 thread per "
        "server, target 10 Hz, CURVE on every link; robot stand-ins send 128x128 frames at "
        "10 Hz and states at 20 Hz and run on the same 2 vCPUs as the servers, at nice 19 (they "
        "stand for robots on their own computers). Latent age: "
        "arrival at the robot minus the send time of the frame it came from (robot clock).",
        "",
        "| N | batched: Hz/robot mean (min) | batched: age p50 / p99 ms | batched: server CPU % "
        "| batch p50 | separate: Hz/robot mean (min) | separate: age p50 / p99 ms | separate: "
        "CPU % (all) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, b, s in rows:
        sep = (
            f"{s['rate_mean']:.2f} ({s['rate_min']:.2f}) | {s['age_p50']:.0f} / "
            f"{s['age_p99']:.0f} | {s['cpu_pct']:.0f}"
            if s
            else "not run | | "
        )
        lines.append(
            f"| {n} | {b['rate_mean']:.2f} ({b['rate_min']:.2f}) | {b['age_p50']:.0f} / "
            f"{b['age_p99']:.0f} | {b['cpu_pct']:.0f} | {b['batch_p50']:.0f} | {sep} |"
        )
    lines += [
        "",
        f"Robots held at >= 7 Hz each by one batched server on this CPU: "
        f"{max(hold) if hold else 0} (of N = {a.ns}).",
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
