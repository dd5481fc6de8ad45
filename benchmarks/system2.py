"""System 2 benchmark: step time split (text cached/uncached, vision, fusion), achieved rate and
CPU share, with System 2 alone (a synthetic state/frame feeder on the other core) and with the
MuJoCo simulation (`dualsys sim`) running on System 2's core; plus the simulation alone, to show
what System 2 costs it. Every run is real processes over real ZeroMQ sockets.

    .venv/bin/python benchmarks/system2.py [--duration 20]

Writes benchmarks/results/system2.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "system2"))

from s2_helpers import Feeder, StatsListener  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.system2.client import send_instruction  # noqa: E402

INSTRUCTIONS = [
    "wave with the right hand", "pick up the red cup", "put the sponge in the sink",
    "open the drawer", "hand me the screwdriver", "point at the door", "stand still",
    "lift both arms", "close the left hand", "turn the head to the right",
]  # fmt: skip


def _proc(run: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dualsys.cli", *args, "--run-dir", str(run)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_hello(listener: StatsListener, roles: set[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while roles - {h.role for h in listener.hellos}:
        if time.monotonic() > end:
            raise TimeoutError(f"no Hello from {roles}")
        listener.poll(200)


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        if p.wait(timeout=60) != 0:
            raise RuntimeError(f"{p.args} exited with {p.returncode}")


def run_case(cfg, duration: float, sim: bool, system2: bool) -> dict[str, dict]:
    """One case; returns the summaries ({role: json}) the processes wrote."""
    run = Path(tempfile.mkdtemp(prefix="bench-s2-"))
    ctx = zmq.Context()
    listener = StatsListener(ctx, cfg, run)
    feeder = None if sim or not system2 else Feeder(cfg, run).start()
    procs, roles = [], set()
    if sim:
        procs.append(_proc(run, "sim"))
        roles.add("robot")
    if system2:
        procs.append(_proc(run, "system2", "--untrained"))
        roles.add("system2")
    stop = threading.Event()
    try:
        _wait_hello(listener, roles)

        def speak() -> None:  # a new instruction every second: uncached text steps
            i = 0
            while not stop.wait(1.0):
                send_instruction(cfg, run, INSTRUCTIONS[i % len(INSTRUCTIONS)], timeout_s=0.9)
                i += 1

        talker = threading.Thread(target=speak, daemon=True)
        if system2:
            talker.start()
        end = time.monotonic() + duration
        while time.monotonic() < end:
            listener.poll(200)
        stop.set()
        if system2:
            talker.join()
        _stop(*procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if feeder:
            feeder.close()
        listener.sub.close()
        ctx.destroy(linger=0)
    out = {}
    for role in roles:
        out[role] = json.loads((run / f"{role}.json").read_text())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per case")
    ap.add_argument("--robot", default="gr1")
    args = ap.parse_args()
    cfg = config.load_robot(args.robot)
    other = [c for c in range(os.cpu_count() or 1) if c != cfg.cores.system2]
    if other:  # the feeder and this script stay off System 2's core
        os.sched_setaffinity(0, {other[0]})
    print(f"sim alone, {args.duration:g} s ...", flush=True)
    alone_sim = run_case(cfg, args.duration, sim=True, system2=False)["robot"]
    print(f"system2 alone (synthetic feeder on core {other[:1]}), {args.duration:g} s ...")
    alone = run_case(cfg, args.duration, sim=False, system2=True)["system2"]
    print(f"system2 + sim on core {cfg.cores.system2}, {args.duration:g} s ...", flush=True)
    both = run_case(cfg, args.duration, sim=True, system2=True)
    s2, rob = both["system2"], both["robot"]

    date = datetime.date.today().isoformat()
    cmd = f".venv/bin/python benchmarks/system2.py --duration {args.duration:g}"
    lines = [
        "## System 2: step time, rate and CPU share",
        "",
        f"{date}, 2 vCPU VM, `{cmd}`; robot {cfg.name}, builtin encoder "
        f"(all-MiniLM-L6-v2 + MobileNetV2 ImageNet at {cfg.cameras[0].width}x"
        f"{cfg.cameras[0].height}, untrained fusion head), latent {cfg.system2.latent_dim}, "
        f"torch 1 thread, target {cfg.rates.system2_target_hz:g} Hz, System 2 on core "
        f"{cfg.cores.system2}; a new instruction every 1 s (uncached text); "
        f"{args.duration:g} s per case. The VM is shared with other work, so tails vary "
        "from run to run.",
        "",
        "| ms (p50 / p99) | System 2 alone (synthetic feeder) | System 2 + MuJoCo sim, same core"
        " | ratio p50 |",
        "|---|---|---|---|",
    ]

    def row(name: str, a: dict, b: dict) -> str:
        r = b["p50"] / a["p50"] if a["p50"] else float("nan")
        return (
            f"| {name} | {a['p50']:.2f} / {a['p99']:.2f} | {b['p50']:.2f} / {b['p99']:.2f} "
            f"| {r:.2f} |"
        )

    def text(s: dict, kind: str) -> dict:
        return {"p50": s["text_ms"][f"{kind}_p50"], "p99": s["text_ms"][f"{kind}_p99"]}

    def fps(r: dict) -> float:
        return r["frames"] / r["wall_s"]

    lines += [
        row("whole step", alone["step_ms"], s2["step_ms"]),
        row("text, cached", text(alone, "cached"), text(s2, "cached")),
        row("text, uncached (new instruction)", text(alone, "uncached"), text(s2, "uncached")),
        row("vision (MobileNetV2)", alone["vision_ms"], s2["vision_ms"]),
        row("fusion", alone["fusion_ms"], s2["fusion_ms"]),
        row("frame age at step start", alone["frame_age_ms"], s2["frame_age_ms"]),
        "",
        "| | System 2 alone | System 2 + sim |",
        "|---|---|---|",
        f"| achieved rate (Hz) | {alone['rate_hz']:.3f} | {s2['rate_hz']:.3f} |",
        f"| steps / overruns | {alone['steps']} / {alone['overruns']} "
        f"| {s2['steps']} / {s2['overruns']} |",
        f"| System 2 CPU share (of one core) | {alone['cpu_share']:.1%} | {s2['cpu_share']:.1%} |",
        f"| uncached text steps | {alone['text_ms']['uncached_count']} "
        f"| {s2['text_ms']['uncached_count']} |",
        f"| dropped inputs | {sum(alone['dropped'].values())} | {sum(s2['dropped'].values())} |",
        "",
        "| simulation (robot process) | sim alone | sim + System 2 |",
        "|---|---|---|",
        f"| realtime factor | {alone_sim['realtime_factor']:.4f} | {rob['realtime_factor']:.4f} |",
        f"| CPU share | {alone_sim['cpu_percent']:.1f}% | {rob['cpu_percent']:.1f}% |",
        f"| render ms p50 / p99 | {alone_sim['render_ms']['p50']:.1f} / "
        f"{alone_sim['render_ms']['p99']:.1f} | {rob['render_ms']['p50']:.1f} / "
        f"{rob['render_ms']['p99']:.1f} |",
        f"| camera frames/s (skipped) | {fps(alone_sim):.2f} ({alone_sim['frames_skipped']}) "
        f"| {fps(rob):.2f} ({rob['frames_skipped']}) |",
        f"| behind-schedule skips | {alone_sim['behind_skips']} | {rob['behind_skips']} |",
        "",
    ]
    out = REPO / "benchmarks" / "results" / "system2.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
