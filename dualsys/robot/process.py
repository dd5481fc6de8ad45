"""The robot process (role "robot"): driver + robot-side safety + bus, paced to the wall clock.

One loop thread wakes on absolute deadlines at cfg.rates.state_hz (200 Hz): it takes the newest
Command, runs the safety filter, writes the driver, advances the simulation by the period (5
physics steps of cfg.sim.timestep; the PD runs inside every step) and publishes RobotState.
A driver whose newest measured state is older than the command timeout (a bridged vendor
process that stopped publishing) makes the safety filter hold, and its state is not published
again until a new one arrives: a frozen state never goes out under fresh timestamps.
Camera frames are rendered by a separate thread (render.FrameThread) at cfg.rates.camera_hz.
If the loop falls more than `MAX_CATCHUP_S` behind it skips ahead (counted, warned once), so the
real-time factor drops instead of the loop spiralling.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from pathlib import Path

import zmq

from dualsys.bus import (
    CameraFrame,
    Command,
    Hello,
    Publisher,
    RobotState,
    Stats,
    Subscriber,
)
from dualsys.bus.curve import BusSecurity
from dualsys.bus.limits import receive_spec
from dualsys.config import RobotConfig
from dualsys.robot.interface import MODE_NAMES, make_driver
from dualsys.robot.safety import RobotSafety, SafetySettings
from dualsys.robot.scene_link import SCENE_TRUTH_HZ, SceneLink
from dualsys.timing import Histogram, current_cpus, pin_to_core, warn_once

ROLE = "robot"
MAX_CATCHUP_S = 0.02
FIFO_PRIORITY = 40


def _enter_fifo(priority: int) -> str:
    """SCHED_FIFO for this thread; a note when not permitted (non-root)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        return f"SCHED_FIFO not permitted ({exc.strerror or exc}); running at normal priority"
    return ""


class _Stop:
    def __init__(self) -> None:
        self.flag = False

    def __call__(self, *_: object) -> None:
        self.flag = True


def run_robot(
    cfg: RobotConfig,
    run_dir: Path,
    duration: float = 0.0,
    *,
    driver_name: str | None = None,
    settings: SafetySettings | None = None,
    realtime: bool = True,
    view: bool = False,
) -> dict:
    """Run the robot process until SIGTERM/SIGINT or `duration` s; returns the summary dict."""
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    supervised = os.environ.get("DUALSYS_SUPERVISED") == "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else stop)
    note = pin_to_core(cfg.cores.robot)
    if note:
        warn_once(note)
    ctx = zmq.Context()
    sec = BusSecurity(ctx, cfg)  # CURVE on tcp:// links when configured; keys checked here
    ep = {name: cfg.endpoint(name, run_dir) for name in ("state", "command", "stats", "camera")}
    driver = make_driver(cfg, driver_name, run_dir=run_dir)
    driver.configure()
    n, source = cfg.n_joints, ROLE
    state_pub = Publisher(
        ctx, ep["state"], source=source, bind=True, curve=sec.curve(ep["state"], bind=True)
    )
    cmd_sub = Subscriber(
        ctx,
        ep["command"],
        (Command,),
        latest=True,
        curve=sec.curve(ep["command"], bind=False),
        **receive_spec(cfg, "command"),  # shapes and size limits of this robot
    )
    stats_pub = Publisher(
        ctx, ep["stats"], source=source, bind=False, curve=sec.curve(ep["stats"], bind=False)
    )
    scene = SceneLink(ctx, cfg, run_dir, driver, sec, source)
    frames = None
    if driver.info.cameras and getattr(driver, "model", None) is not None:
        from dualsys.robot.render import FrameThread

        cam_pub = Publisher(
            ctx,
            ep["camera"],
            source=source,
            bind=True,
            hwm=4,
            curve=sec.curve(ep["camera"], bind=True),
        )

        def publish(name, image, sim_time):
            cam_pub.send(CameraFrame(camera=name, image=image, sim_time=sim_time))

        frames = FrameThread(driver.model, cfg.cameras, publish)
        frames.start()
        frames.ready.wait(30)
        if frames.error is not None:
            warn_once(f"camera rendering unavailable ({frames.error}); no frames will be sent")
    viewer = _open_viewer(driver) if view else None
    if realtime:
        note = _enter_fifo(FIFO_PRIORITY)
        if note:
            warn_once(note)
    safety = RobotSafety(cfg, settings)
    driver.activate()
    safety.reset(0.0, driver.read_state().q)

    simulated = driver.info.simulated
    dt = 1.0 / cfg.rates.state_hz
    substeps = max(1, round(dt / cfg.sim.timestep)) if simulated else 0
    period_ns = round(dt * 1e9)
    camera_every = max(1, round(1.0 / (cfg.rates.camera_hz * dt)))
    stats_every = max(1, round(1.0 / (cfg.rates.stats_hz * dt)))
    scene_every = max(2, round(1.0 / (SCENE_TRUTH_HZ * dt)))
    hello_every = max(1, round(1.0 / dt))
    hello = Hello(
        role=ROLE, robot=cfg.name, latent_dim=cfg.system2.latent_dim, n_joints=n, pid=os.getpid()
    )
    cmd_to_state_us = Histogram()
    pending_cmd_ns = 0
    ticks = steps = state_msgs = behind = stale_ticks = 0
    stale_s = safety.s.command_timeout_s  # a measured state older than this is not published
    mode = safety.mode
    error = ""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t_start = time.monotonic_ns()
    deadline = t_start
    window = (t_start, 0.0)
    rtf_window = 1.0
    end_ns = t_start + int(duration * 1e9) if duration > 0 else None
    try:
        while not stop.flag:
            deadline += period_ns
            now = time.monotonic_ns()
            if deadline - now > 50_000:
                time.sleep((deadline - now) / 1e9)
                now = time.monotonic_ns()
            elif now - deadline > MAX_CATCHUP_S * 1e9:
                behind += 1
                if behind == 1:
                    warn_once("robot loop fell behind real time; skipping ahead (counted)")
                deadline = now
            if end_ns is not None and now >= end_ns:
                break
            t = (now - t_start) / 1e9
            msg = cmd_sub.recv_latest()
            accepted = msg is not None and safety.offer(t, msg.q, msg.dq, msg.mode)
            if accepted and not pending_cmd_ns:
                pending_cmd_ns = msg.header.t_mono_ns
            state = driver.read_state()
            stale = driver.state_age_s > stale_s  # a bridged peer went silent: hold
            q, dq, mode = safety.update(t, state.q, state.dq, stale)
            driver.write_command(q, dq, mode)
            driver.advance(dt)
            ticks += 1
            steps += substeps
            state = driver.read_state()
            if driver.state_age_s > stale_s:  # never republish a frozen state as a fresh one
                stale_ticks += 1
            else:
                state_pub.send(RobotState(state.q, state.dq, state.tau, state.t, MODE_NAMES[mode]))
                state_msgs += 1
            if pending_cmd_ns:
                cmd_to_state_us.record((time.monotonic_ns() - pending_cmd_ns) // 1000)
                pending_cmd_ns = 0
            if frames is not None and ticks % camera_every == 0:
                frames.submit(driver.data.qpos, driver.data.time)
            if viewer is not None and ticks % 20 == 0:
                if not viewer.is_running():
                    break
                viewer.sync()
            if ticks % stats_every == 0:
                wall = (now - window[0]) / 1e9
                if wall > 0 and simulated:
                    rtf_window = (state.t - window[1]) / wall
                    if rtf_window < 0.9 and ticks * dt > 2.0:
                        warn_once(f"simulation behind real time: real-time factor {rtf_window:.2f}")
                window = (now, state.t)
                stats_pub.send(
                    Stats(
                        process=ROLE,
                        values=_values(
                            rtf_window, steps, state_msgs, frames, safety, cmd_sub, mode, behind
                        )
                        | {"cmd_to_state_ms_p99": cmd_to_state_us.pct(99) / 1e3},
                    )
                )
            if (ticks - 1) % hello_every == 0:
                stats_pub.send(hello)
            if ticks % scene_every == 1:
                scene.poll(state.t)
    except Exception as exc:  # leave the robot safe, report, exit non-zero
        error = f"{type(exc).__name__}: {exc}"
        warn_once(f"robot loop stopped by an error: {error}")
    wall_s = (time.monotonic_ns() - t_start) / 1e9
    usage = resource.getrusage(resource.RUSAGE_SELF)
    driver.deactivate()
    if frames is not None:
        frames.stop()
        frames.join(5)
        cam_pub.close()
    if viewer is not None:
        viewer.close()
    sim_time = driver.read_state().t if simulated else 0.0
    summary = {
        "realtime_factor": sim_time / wall_s if simulated and wall_s > 0 else 0.0,
        "physics_steps": steps,
        "frames": frames.frames if frames else 0,
        "render_ms": _render_ms(frames),
        "watchdog_trips": safety.watchdog_trips,
        "velocity_trips": safety.velocity_trips,
        "state_stale_trips": safety.stale_trips,
        "state_stale_ticks": stale_ticks,
        "commands": safety.commands,
        "commands_refused": safety.commands_refused + cmd_sub.dropped_total,
        "refused": dict(safety.refused),
        "commands_clipped": safety.clipped,
        "dropped": dict(cmd_sub.dropped),
        "scene_reset_dropped": scene.dropped,
        "cpus": current_cpus(),
        "driver": driver.NAME,
        "state_msgs": state_msgs,
        "behind_skips": behind,
        "frames_skipped": frames.skipped if frames else 0,
        "cmd_to_state_ms": cmd_to_state_us.summary(scale=1e3),
        "sim_time": sim_time,
        "wall_s": wall_s,
        "cpu_percent": 100.0 * (usage.ru_utime + usage.ru_stime - cpu0) / wall_s,
        "error": error,
    }
    for sock in (state_pub, cmd_sub, stats_pub, scene):
        sock.close()
    sec.close()
    ctx.term()
    (Path(run_dir) / f"{ROLE}.json").write_text(json.dumps(summary, indent=2))
    return summary


def _render_ms(frames) -> dict[str, float]:
    if frames is None or not frames.render_us.count:
        return {"p50": 0.0, "p99": 0.0}
    return {"p50": frames.render_us.pct(50) / 1e3, "p99": frames.render_us.pct(99) / 1e3}


def _values(rtf, steps, state_msgs, frames, safety, cmd_sub, mode, behind) -> dict[str, float]:
    r = _render_ms(frames)
    return {
        "realtime_factor": rtf,
        "physics_steps": steps,
        "state_msgs": state_msgs,
        "frames": frames.frames if frames else 0,
        "render_ms_p50": r["p50"],
        "render_ms_p99": r["p99"],
        "watchdog_trips": safety.watchdog_trips,
        "velocity_trips": safety.velocity_trips,
        "state_stale_trips": safety.stale_trips,
        "commands": safety.commands,
        "commands_refused": safety.commands_refused + cmd_sub.dropped_total,
        "mode": mode,
        "behind_skips": behind,
    }


def _open_viewer(driver):
    """MuJoCo's passive viewer window (needs a display and MUJOCO_GL=glfw)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("--view needs a display (DISPLAY / WAYLAND_DISPLAY is not set)")
    if getattr(driver, "model", None) is None:
        raise RuntimeError(f"--view needs a simulated driver, not {driver.NAME!r}")
    import mujoco.viewer

    return mujoco.viewer.launch_passive(driver.model, driver.data)
