"""The live loop's compiled ticks: steady-state ticks allocate nothing, events reach Python.

Real ZeroMQ sockets throughout: the robot's state comes from another process at 500 Hz, the
commands go to a real subscriber."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus.codec import decode
from dualsys.bus.curve import BusSecurity
from dualsys.bus.latent_link import LatentOut
from dualsys.bus.messages import ActionChunk, Command, Latent
from dualsys.bus.transport import Publisher
from dualsys.system1 import tick as tk
from dualsys.system1.control import HOLD, RUN, ControlLoop
from dualsys.system1.control_proc import StopFlag, arm, run_loop

CFG = config.load_robot("gr1")
LIM = CFG.limits()
N, H = CFG.n_joints, CFG.policy.chunk_horizon
P = CFG.rates.control_period_ns
MID = ((LIM["min"] + LIM["max"]) / 2)[CFG.controlled_indices]

#: the robot: RobotState frames at 500 Hz from another process (its allocations are its own)
STATE_PUBLISHER = """
import sys, time
import numpy as np, zmq
from dualsys.bus.messages import RobotState
from dualsys.bus.transport import Publisher
ep, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
pub = Publisher(zmq.Context(), ep, "robot")
q = np.zeros(n)
end = time.monotonic() + seconds
while time.monotonic() < end:
    pub.send(RobotState(q=q, dq=q, tau=q))
    time.sleep(0.002)
pub.close()
"""


class Rig:
    """A configured, warmed ControlLoop; latent and chunk publishers; a command reader."""

    def __init__(self, run_dir) -> None:
        self.ctx = zmq.Context()
        self.loop = ControlLoop(CFG, self.ctx, run_dir)
        self.loop.configure()
        ep = {n: CFG.endpoint(n, run_dir) for n in ("state", "latent", "chunk", "command")}
        self.ep = ep
        self.sec = BusSecurity(self.ctx, CFG)
        # System 2's latent link: ZeroMQ and the shm slot the control process reads
        self.latent = LatentOut(self.ctx, CFG, run_dir, self.sec, "system2")
        self.chunk = Publisher(self.ctx, ep["chunk"], "policy")
        self.cmds = self.ctx.socket(zmq.SUB)
        self.cmds.setsockopt(zmq.SUBSCRIBE, b"")
        self.cmds.setsockopt(zmq.RCVHWM, 100_000)
        self.cmds.connect(ep["command"])
        self.robot: subprocess.Popen | None = None
        time.sleep(0.3)
        self.loop.warm(60)
        while self.cmds.poll(200):  # the warm-up's commands
            self.cmds.recv()

    def start_robot(self, seconds: float) -> None:
        self.robot = subprocess.Popen(
            [sys.executable, "-c", STATE_PUBLISHER, self.ep["state"], str(N), str(seconds)]
        )
        assert self.loop.state_sub.sock.poll(20_000), "no state from the robot process"

    def commands(self) -> list[Command]:
        out = []
        while self.cmds.poll(100):
            out.append(decode(self.cmds.recv(), (Command,)))
        return out

    def close(self) -> None:
        if self.robot is not None:
            self.robot.kill()
            self.robot.wait()
        for s in (self.latent, self.chunk):
            s.close()
        self.sec.close()
        self.cmds.close(0)
        self.loop.close()
        self.ctx.term()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def _chunk(t0_ns: int, dt_ns: int, seq_id: int) -> ActionChunk:
    return ActionChunk(
        actions=np.tile(MID, (H, 1)).astype(np.float32), t0_mono_ns=t0_ns, dt_ns=dt_ns,
        chunk_id=seq_id,
    )  # fmt: skip


def _peak(fn, *args) -> tuple[int, int]:
    """(peak traced bytes above the start during one call, bytes kept after it), under a
    running tracemalloc."""
    cur0, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    fn(*args)
    cur1, peak = tracemalloc.get_traced_memory()
    return peak - cur0, cur1 - cur0


def test_steady_state_ticks_allocate_nothing(rig) -> None:
    """Compiled ticks following a chunk, with the robot's state arriving every tick and each
    command reaching a subscriber, allocate nothing: a call running 200 ticks peaks no higher
    than a call running none (only the call's own argument boxing), and 2000 ticks keep
    nothing. The same measurement sees the Python tick's allocations (`ControlLoop.update`:
    ints and the boxing of its compiled calls), so it would fail on a Python loop."""
    loop = rig.loop
    rig.start_robot(60)
    loop.v[tk.V_STALE] = loop.v[tk.V_DEAD] = 60 * 10**9  # one latent lasts the test
    for _ in range(10):  # (a miss streak on a busy machine holds for a second: again)
        now = time.monotonic_ns()
        rig.latent.send(Latent(vector=np.zeros(CFG.system2.latent_dim, np.float32)), now)
        rig.chunk.send(_chunk(now + 5 * 10**9, 10**9, 1))  # one chunk to the end of the test
        # the real driver takes the state, latent and chunk (Python events) and follows
        run_loop(loop, StopFlag(), 0.3, 200_000)
        if loop.safe == RUN:
            break
    assert loop.have_state and loop.have_chunk and loop.safe == RUN
    R = loop.regs  # noqa: N806

    def ticks(n: int) -> int:  # n steady-state ticks in one compiled call
        R[tk.R_END] = R[tk.R_DEADLINE] + n * P
        return loop.run_ticks()

    def rearm() -> None:  # from the next period on; no Stats, Hello or baseline due
        arm(loop, time.monotonic_ns() + 2 * P, 0, 200_000, True, False)
        R[tk.R_STATS_EVERY] = R[tk.R_HELLO_EVERY] = 1 << 40
        loop.tick = max(loop.tick, 1000)
        loop.flush_pending()

    rearm()
    assert ticks(20) == tk.EV_END  # compiled once, caches warm
    rig.commands()
    tick0, frames0 = loop.tick, loop.state_frame.count
    tracemalloc.start()
    try:
        base = steady = kept_base = kept = 0
        clean = 0
        for _ in range(30):  # 10 runs in which no tick missed (a miss hands back to Python)
            rearm()
            peak, net = _peak(ticks, 0)
            base, kept_base = max(base, peak), kept_base + net
            rearm()
            ticks0 = loop.tick
            peak, net = _peak(ticks, 200)
            if R[tk.R_NPEND] != 200 or loop.tick - ticks0 != 200:
                continue
            steady, kept = max(steady, peak), kept + net
            clean += 1
            if clean == 10:
                break
        tick1, frames1 = loop.tick, loop.state_frame.count
        rearm()

        def python_ticks() -> None:  # the same measurement on the Python tick
            t = time.monotonic_ns()
            for i in range(200):
                loop.update(t + i * P)

        loop.activate(time.monotonic_ns())
        python, _ = _peak(python_ticks)
    finally:
        tracemalloc.stop()
    cmds = rig.commands()
    print(
        f"peak: call {base} B, 200 compiled ticks {steady} B, 200 Python ticks {python} B;"
        f" kept: calls {kept_base} B, compiled ticks {kept} B"
    )
    assert clean == 10, "too many runs with a missed tick"
    assert frames1 - frames0 > 1000  # a state taken nearly every tick
    compiled = [c for c in cmds if tick0 <= c.tick < tick1]
    assert len(compiled) == tick1 - tick0 >= 2000 and {c.mode for c in compiled} == {"run"}
    assert len({c.state_seq for c in compiled}) > 1000  # the newest state's seq, per tick
    assert steady <= base  # no tick allocated, not even transiently
    assert kept <= kept_base  # and nothing was kept (the harness's own ints aside)
    assert python > base  # the measurement sees a Python tick's allocations


def test_events_reach_python(rig) -> None:
    """Under the live driver, chunks arriving mid-run are each taken (their seqs reach the
    commands), and the latent going stale switches to hold: both events of the compiled
    loop's hand-over to Python."""
    loop = rig.loop
    rig.start_robot(10)
    sent_chunks: list[int] = []

    def feed() -> None:
        time.sleep(0.2)
        lat = Latent(vector=np.zeros(CFG.system2.latent_dim, np.float32))
        rig.latent.send(lat, time.monotonic_ns())
        for _ in range(8):  # a chunk every 0.1 s for 0.8 s, each covering 0.3 s
            rig.chunk.send(_chunk(time.monotonic_ns(), 20_000_000, 1))
            sent_chunks.append(rig.chunk.seq)
            time.sleep(0.1)

    feeder = threading.Thread(target=feed)
    feeder.start()
    run_loop(loop, StopFlag(), 1.6, 200_000)
    feeder.join()
    cmds = rig.commands()
    taken = {c.chunk_seq for c in cmds}
    # each chunk is taken (a busy machine may let a newer one replace one still waiting)
    assert len(sent_chunks) == 8 and loop.chunks >= 6 and sent_chunks[-1] in taken
    assert len(set(sent_chunks) & taken) == loop.chunks
    states = [(e["state"], e["reason"]) for e in loop.events]
    assert ("run", "ok") in states and states[-1] == ("hold", "latent stale"), states
    assert loop.safe == HOLD
    assert loop.mon.ticks >= 0.9 * 1.6e9 / P  # every period counted (ticks or skipped)


def test_stop_flag_ends_the_compiled_loop(rig) -> None:
    """A stop set while the compiled ticks run ends the loop at the next return to Python
    (a Stats part, within one Stats period)."""
    loop = rig.loop
    stop = StopFlag()
    threading.Timer(0.5, lambda: setattr(stop, "set", True)).start()
    t0 = time.monotonic()
    run_loop(loop, stop, 30.0, 200_000)
    assert time.monotonic() - t0 < 0.5 + 2 / CFG.rates.stats_hz
