"""A control loop on real sockets for tests and benchmarks, and the allocation measurement of
its compiled steady-state ticks (tests/system1/test_s1_compiled_tick.py, benchmarks/alloc.py).

`ControlRig` configures and warms a `ControlLoop` in a run directory, with System 2's latent
link (ZeroMQ and the shm slot), a chunk publisher, a command subscriber and the echo robot in
its own process publishing the state. `steady_allocation` runs compiled ticks under
tracemalloc, a call with no tick against a call with many, and the Python tick for contrast.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus.codec import decode
from dualsys.bus.curve import BusSecurity
from dualsys.bus.latent_link import LatentOut
from dualsys.bus.messages import ActionChunk, Command, Latent
from dualsys.bus.transport import Publisher
from dualsys.config import RobotConfig
from dualsys.system1 import tick as tk
from dualsys.system1.control import RUN, ControlLoop
from dualsys.system1.control_proc import StopFlag, arm, run_loop
from dualsys.testing.nrt import nrt_allocations


class ControlRig:
    """A configured, warmed ControlLoop; latent and chunk publishers; a command reader; the
    echo robot (`start_robot`). `close` ends all of them."""

    def __init__(self, cfg: RobotConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ctx = zmq.Context()
        self.loop = ControlLoop(cfg, self.ctx, run_dir)
        self.loop.configure()
        self.sec = BusSecurity(self.ctx, cfg)
        self.latent = LatentOut(self.ctx, cfg, run_dir, self.sec, "system2")
        self.chunk = Publisher(self.ctx, cfg.endpoint("chunk", run_dir), "policy")
        self.cmds = self.ctx.socket(zmq.SUB)
        self.cmds.setsockopt(zmq.SUBSCRIBE, b"")
        self.cmds.setsockopt(zmq.RCVHWM, 100_000)
        self.cmds.connect(cfg.endpoint("command", run_dir))
        self.robot: subprocess.Popen | None = None
        time.sleep(0.3)
        self.loop.warm(60)
        while self.cmds.poll(200):  # the warm-up's commands
            self.cmds.recv()

    def start_robot(self, seconds: float) -> None:
        """The echo robot, publishing the state at the config's rate for `seconds`."""
        self.robot = subprocess.Popen(
            [sys.executable, "-m", "dualsys.testing.echo_robot", "--robot", self.cfg.name,
             "--run-dir", str(self.run_dir), "--duration", str(seconds)]
        )  # fmt: skip
        if not self.loop.state_sub.sock.poll(30_000):
            raise RuntimeError("no state from the echo robot in 30 s")

    def send_latent(self) -> None:
        lat = Latent(vector=np.zeros(self.cfg.system2.latent_dim, np.float32))
        self.latent.send(lat, time.monotonic_ns())

    def send_chunk(self, t0_ns: int, dt_ns: int) -> None:
        """A chunk holding mid-range positions for the controlled joints."""
        lim = self.cfg.limits()
        mid = ((lim["min"] + lim["max"]) / 2)[self.cfg.controlled_indices]
        acts = np.tile(mid, (self.cfg.policy.chunk_horizon, 1)).astype(np.float32)
        self.chunk.send(ActionChunk(actions=acts, t0_mono_ns=t0_ns, dt_ns=dt_ns, chunk_id=1))

    def commands(self) -> list[Command]:
        """Every command received so far."""
        out = []
        while self.cmds.poll(100):
            out.append(decode(self.cmds.recv(), (Command,)))
        return out

    def close(self) -> None:
        if self.robot is not None:
            self.robot.kill()
            self.robot.wait()
        self.latent.close()
        self.chunk.close()
        self.sec.close()
        self.cmds.close(0)
        self.loop.close()
        self.ctx.term()


def follow(rig: ControlRig, seconds: float) -> None:
    """Bring the loop to following one chunk that lasts `seconds`, with one latent that stays
    fresh as long: the live driver takes them (Python events). Retries while a miss streak
    (a busy machine) holds."""
    loop = rig.loop
    loop.v[tk.V_STALE] = loop.v[tk.V_DEAD] = int(seconds * 1e9)
    for _ in range(10):
        now = time.monotonic_ns()
        rig.send_latent()
        rig.send_chunk(now + int(seconds * 1e9) // 2, 10**9)  # dt 1 s: 15 s of chunk
        run_loop(loop, StopFlag(), 0.3, 200_000)
        if loop.safe == RUN:
            return
    raise RuntimeError("the loop did not start following the chunk")


def _peak(fn: Callable[..., object], *args: object) -> tuple[int, int]:
    """(peak traced bytes above the start during one call, bytes kept after it)."""
    cur0, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    fn(*args)
    cur1, peak = tracemalloc.get_traced_memory()
    return peak - cur0, cur1 - cur0


def steady_allocation(rig: ControlRig, ticks: int = 200, runs: int = 10) -> dict[str, int]:
    """Compiled steady-state ticks under tracemalloc (the loop following, see `follow`).

    For `runs` runs in which no tick missed (a miss hands back to Python): the peak traced
    bytes of a `run_ticks` call running no tick (`call`: the call's own argument boxing) and
    of one running `ticks` (`compiled`), and the bytes each kept (`kept_call`, `kept`); then
    the peak of `ticks` Python ticks (`ControlLoop.update`, the first one taking a chunk) for
    contrast (`python`). Also the
    ticks run, state frames taken and the loop's tick counter before and after, and numba's
    runtime allocations of a call running no tick and one running `ticks` (`nrt_call`,
    `nrt_compiled`: compiled code allocates from its own heap, which tracemalloc does not
    see); and the peak of a bare compiled call running no tick and of one running `ticks`
    that take a new latent and chunk themselves (`event_call`, `event`, `event_takes`).

    A run with a missed tick is no measurement of the compiled ticks (the miss hands back to
    Python), so each measurement takes the first clean run of up to `3 * runs` (steady ticks)
    or `runs` (numba's heap, events) tries; one that found none is absent from the result."""
    loop = rig.loop
    R = loop.regs  # noqa: N806
    period = loop.period_ns

    def run(n: int) -> int:  # n steady-state ticks in one compiled call
        R[tk.R_END] = R[tk.R_DEADLINE] + n * period
        return loop.run_ticks()

    def rearm() -> None:  # from the next period on; no Stats, Hello or baseline due
        arm(loop, time.monotonic_ns() + 2 * period, 0, 200_000, True, False)
        R[tk.R_STATS_EVERY] = R[tk.R_HELLO_EVERY] = 1 << 40
        loop.tick = max(loop.tick, 1000)
        loop.flush_pending()

    tries = runs
    rearm()
    run(20)  # caches warm
    rig.commands()
    out = dict.fromkeys(("call", "compiled", "kept_call", "kept", "clean", "python"), 0)
    out["tick0"], out["frames0"] = loop.tick, loop.state_frame.count
    tracemalloc.start()
    try:
        for _ in range(3 * runs):
            rearm()
            peak, net = _peak(run, 0)
            out["call"], out["kept_call"] = max(out["call"], peak), out["kept_call"] + net
            rearm()
            tick0 = loop.tick
            peak, net = _peak(run, ticks)
            if R[tk.R_NPEND] != ticks or loop.tick - tick0 != ticks:
                continue  # a tick missed and handed back to Python
            out["compiled"], out["kept"] = max(out["compiled"], peak), out["kept"] + net
            out["clean"] += 1
            if out["clean"] == runs:
                break
        out["tick1"], out["frames1"] = loop.tick, loop.state_frame.count
        # numba's own heap (invisible to tracemalloc): the same count with and without ticks
        for _ in range(tries):
            rearm()
            out["nrt_call"] = nrt_allocations(run, 0)
            rearm()
            n = nrt_allocations(run, ticks)
            if R[tk.R_NPEND] == ticks:
                out["nrt_compiled"] = n
                break
        # event ticks: a latent and a chunk from the sources the loop knows arrive before the
        # ticks and are taken by them (the compiled check and hand-over); the bare compiled
        # call, without the Python around it (which counts what was taken afterwards)
        for _ in range(tries):
            rearm()
            loop.probe_inputs()
            R[tk.R_END] = R[tk.R_DEADLINE]
            out["event_call"], _ = _peak(tk.run_ticks, *loop.tick_args)
            rig.send_latent()
            rig.send_chunk(time.monotonic_ns() + int(7.5e9), 10**9)
            loop.chunk_sub.sock.poll(1000)
            time.sleep(0.01)  # the latent's slot written too
            rearm()
            R[tk.R_END] = R[tk.R_DEADLINE] + ticks * period
            loop.probe_inputs()
            taken0 = loop.taken[tk.X_CHUNKS] + loop.taken[tk.X_LATENTS]
            tracemalloc_peak, _ = _peak(tk.run_ticks, *loop.tick_args)
            n_taken = int(loop.taken[tk.X_CHUNKS] + loop.taken[tk.X_LATENTS] - taken0)
            loop.fold_taken()
            if R[tk.R_NPEND] == ticks:
                out["event"], out["event_takes"] = tracemalloc_peak, n_taken
                break
        rearm()

        def python_ticks() -> None:
            t = time.monotonic_ns()
            for i in range(ticks):
                loop.update(t + i * period)

        loop.activate(time.monotonic_ns())
        rig.send_chunk(time.monotonic_ns(), 10**9)  # taken by the first Python tick
        loop.chunk_sub.sock.poll(1000)
        out["python"], _ = _peak(python_ticks)
    finally:
        tracemalloc.stop()
    return out


def measure_in_fresh_process(seconds: float = 60.0) -> dict[str, int]:
    """`steady_allocation` in a rig of its own, in this (fresh) process, plus what the
    commands of the compiled ticks carried: tracemalloc counts every thread's allocations, so
    the measurement must run where no other Python thread does (a test suite's process keeps
    threads of earlier tests). Run as `python -m dualsys.testing.control_rig`; prints JSON."""
    import tempfile

    from dualsys import config

    with tempfile.TemporaryDirectory(prefix="dualsys-alloc-") as run_dir:
        rig = ControlRig(config.load_robot("gr1"), Path(run_dir))
        try:
            rig.start_robot(seconds)
            follow(rig, seconds)
            a = steady_allocation(rig, ticks=200, runs=10)
            a["threads"] = threading.active_count()  # Python threads alive while measuring
            cmds = [c for c in rig.commands() if a["tick0"] <= c.tick < a["tick1"]]
        finally:
            rig.close()
    a["commands"] = len(cmds)
    a["run_modes"] = int(all(c.mode == "run" for c in cmds))
    a["state_seqs"] = len({c.state_seq for c in cmds})
    return a


if __name__ == "__main__":
    import json

    print(json.dumps(measure_in_fresh_process()))
