"""Benchmark of the robot side: physics rate, paced real-time factor, rendering, latency.

Side by side in one run:
1. physics steps/s of the GR-1 scene, offline on one core (real-time factor = steps/s x dt);
2. the `dualsys sim` process paced to the wall clock: real-time factor, CPU use, render time;
3. head-camera render time per frame: chosen settings (simplified meshes, no shadows,
   reflections or skybox) vs the full meshes with MuJoCo's default flags, at the config's size
   and at 224x224;
4. end-to-end command -> state latency through the bus: a client sends Commands to the robot
   process and waits for the RobotState that reflects each one (ideal driver: the state shows
   the applied target exactly), and the robot's own command-receipt -> state-publish time with
   the MuJoCo driver.

Run: .venv/bin/python benchmarks/sim.py  (writes benchmarks/results/sim.md)
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.bus import Command, Publisher, RobotState, Subscriber  # noqa: E402
from dualsys.config import Camera  # noqa: E402
from dualsys.timing import pin_to_core  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sim.md"


def pct(values, p) -> float:
    return float(np.percentile(np.asarray(values), p))


def physics_rate(cfg) -> dict:
    from dualsys.robot.simulation import Simulation

    sim = Simulation(cfg)
    sim.configure()
    sim.activate()
    sim.step(500)
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        sim.step(2000)
        rates.append(2000 / (time.perf_counter() - t0))
    return {"steps_s": float(np.median(rates)), "rtf": float(np.median(rates)) * cfg.sim.timestep}


def render_times(cfg, n: int = 40) -> list[dict]:
    import mujoco

    from dualsys.robot.model import MESH_CELL, build_model
    from dualsys.robot.render import CameraRenderer

    rows = []
    cam = cfg.cameras[0]
    for label, cell, light in (("chosen", MESH_CELL, True), ("full meshes", 0.0, False)):
        model, jmap = build_model(cfg, cell)
        data = mujoco.MjData(model)
        data.qpos[jmap.qpos_adr] = cfg.limits()["default"]
        mujoco.mj_forward(model, data)
        for w, h in ((cam.width, cam.height), (224, 224)):
            r = CameraRenderer(model, (Camera(cam.name, w, h, cam.fovy),), light=light)
            r.render(data, cam.name)  # warm-up (shader compilation)
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                r.render(data, cam.name)
                ts.append((time.perf_counter() - t0) * 1e3)
            r.close()
            rows.append(
                {
                    "setting": label,
                    "size": f"{w}x{h}",
                    "triangles": int(model.nmeshface),
                    "p50": pct(ts, 50),
                    "p99": pct(ts, 99),
                }
            )
    return rows


def start_sim(run_dir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dualsys.cli", "sim", "--run-dir", str(run_dir), *args]
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL)


def paced_run(cfg, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        proc = start_sim(Path(d), "--duration", str(seconds))
        proc.wait(seconds + 60)
        return json.loads((Path(d) / "robot.json").read_text())


def bus_latency(cfg, driver: str, probes: int = 1000) -> tuple[list[float], dict]:
    """Command -> reflecting state latencies (ms) measured by a client, plus robot summary."""
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory() as d:
        run = Path(d)
        pub = Publisher(ctx, cfg.endpoint("command", run), source="control", bind=True)
        sub = Subscriber(ctx, cfg.endpoint("state", run), (RobotState,), latest=True)
        proc = start_sim(run, "--driver", driver)
        assert sub.recv(60_000) is not None, "robot process did not start"
        q = cfg.limits()["default"].copy()
        j = cfg.joint_names.index("left_elbow_pitch_joint")
        end = time.monotonic() + 2.0  # soft start (1.5 s) at a constant target
        while time.monotonic() < end:
            pub.send(Command(q=q, dq=np.zeros(cfg.n_joints), mode="run"))
            time.sleep(0.005)
        lat = []
        for k in range(probes):
            q[j] = -0.3 - 0.0005 * ((k % 20) + 1)  # small steps: no velocity trip
            t0 = time.monotonic_ns()
            pub.send(Command(q=q, dq=np.zeros(cfg.n_joints), mode="run", tick=k))
            deadline = time.monotonic() + 0.2
            while driver == "ideal" and time.monotonic() < deadline:
                msg = sub.recv(20)
                if msg is not None and abs(msg.q[j] - q[j]) < 1e-9:
                    lat.append((time.monotonic_ns() - t0) / 1e6)
                    break
            time.sleep(0.004 + 0.003 * np.random.rand())
        proc.terminate()
        proc.wait(20)
        summary = json.loads((run / "robot.json").read_text())
        pub.close()
        sub.close()
    ctx.term()
    return lat, summary


def main() -> int:
    cfg = config.load_robot("gr1")
    pin_to_core(cfg.cores.robot)
    phys = physics_rate(cfg)
    renders = render_times(cfg)
    paced = paced_run(cfg, 10.0)
    pin_to_core(cfg.cores.system1)  # the client plays System 1's control process
    lat_ideal, sum_ideal = bus_latency(cfg, "ideal")
    _, sum_mj = bus_latency(cfg, "mujoco", probes=600)
    date = datetime.date.today().isoformat()
    head = f"{date}, 2 vCPU VM (no GPU, llvmpipe rendering), `.venv/bin/python benchmarks/sim.py`"
    lines = [
        "# Robot side: MuJoCo simulation of GR-1",
        "",
        f"## Physics and real-time factor ({head})",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| physics steps/s, offline, one core (dt {cfg.sim.timestep * 1e3:g} ms) "
        f"| {phys['steps_s']:,.0f} |",
        f"| offline real-time factor (steps/s x dt) | {phys['rtf']:.1f} |",
        f"| `dualsys sim` paced to the wall clock, 10 s: real-time factor "
        f"| {paced['realtime_factor']:.4f} |",
        f"| `dualsys sim`: physics steps / state msgs / frames in 10 s "
        f"| {paced['physics_steps']} / {paced['state_msgs']} / {paced['frames']} |",
        f"| `dualsys sim`: CPU use of the whole process (physics+bus+rendering) "
        f"| {paced['cpu_percent']:.1f} % of one core |",
        f"| `dualsys sim`: in-process render time p50 / p99 (ms, with physics beside it) "
        f"| {paced['render_ms']['p50']:.1f} / {paced['render_ms']['p99']:.1f} |",
        f"| `dualsys sim`: loop skips (fell > 20 ms behind) | {paced['behind_skips']} |",
        "",
        f"## Head-camera render time per frame ({head})",
        "",
        "chosen = meshes simplified by vertex clustering (8 mm grid), no shadows / reflections / "
        "skybox; full meshes = the description's meshes as shipped, MuJoCo's default flags.",
        "",
        "| setting | size | triangles | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for r in renders:
        tri, p50, p99 = f"{r['triangles']:,}", f"{r['p50']:.1f}", f"{r['p99']:.1f}"
        cells = (r["setting"], r["size"], tri, p50, p99)
        lines.append("| " + " | ".join(cells) + " |")
    cm = sum_mj["cmd_to_state_ms"]
    ci = sum_ideal["cmd_to_state_ms"]
    lines += [
        "",
        f"## Command -> state latency through the bus ({head})",
        "",
        "client = a process sends a Command (ipc PUB) and waits for the RobotState (ipc SUB, "
        "CONFLATE) that shows it applied; robot-internal = from the command's send time to the "
        "publish of the next state, measured by the robot process. The robot loop runs at "
        f"{cfg.rates.state_hz} Hz, so about half a period ({500 / cfg.rates.state_hz:.1f} ms) "
        "of waiting for the next tick is expected.",
        "",
        "| path | n | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| client round trip, ideal driver | {len(lat_ideal)} | {pct(lat_ideal, 50):.2f} "
        f"| {pct(lat_ideal, 99):.2f} | {max(lat_ideal):.2f} |",
        f"| robot-internal, ideal driver | {ci['count']} | {ci['p50']:.2f} | {ci['p99']:.2f} "
        f"| {ci['max']:.2f} |",
        f"| robot-internal, MuJoCo driver (physics + rendering running) | {cm['count']} "
        f"| {cm['p50']:.2f} | {cm['p99']:.2f} | {cm['max']:.2f} |",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
