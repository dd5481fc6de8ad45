"""The live loop's compiled ticks: steady-state ticks allocate nothing, events reach Python.

Real ZeroMQ sockets throughout: the echo robot publishes the state from its own process, the
latent comes through System 2's link (ZeroMQ and the shm slot), the commands go to a real
subscriber."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from dualsys import config
from dualsys.bus.messages import Command
from dualsys.system1.control import HOLD
from dualsys.system1.control_proc import StopFlag, run_loop
from dualsys.system1.floor import MissAttribution
from dualsys.testing.control_rig import ControlRig

CFG = config.load_robot("gr1")
P = CFG.rates.control_period_ns


@pytest.fixture
def rig(tmp_path):
    r = ControlRig(CFG, tmp_path)
    yield r
    r.close()


def test_steady_state_ticks_allocate_nothing() -> None:
    """Compiled ticks following a chunk, with the robot's state arriving every tick and each
    command reaching a subscriber, allocate nothing: a call running 200 ticks peaks no higher
    than a call running none (the call's own argument boxing), and 2000 ticks keep nothing
    more than 10 calls do. The same measurement sees the Python tick's allocations
    (`ControlLoop.update` taking a chunk: the decoded message): a loop that ran Python ticks
    (as the loop before the compiled ticks did) would fail it. Measured in a fresh
    process: tracemalloc also counts other threads, and this suite's process keeps some."""
    r = subprocess.run(
        [sys.executable, "-m", "dualsys.testing.control_rig"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    a = json.loads(r.stdout.strip().splitlines()[-1])
    print(a)
    assert a["threads"] == 1  # nothing else could allocate during the measurement
    assert a["clean"] == 10, "too many runs with a missed tick"
    for key in ("nrt_compiled", "event_takes"):  # each needs one run without a missed tick
        assert key in a, f"{key}: every try had a missed tick: {a}"
    assert a["frames1"] - a["frames0"] > 1000  # a state taken nearly every tick
    assert a["commands"] == a["tick1"] - a["tick0"] >= 2000
    assert a["run_modes"] == 1
    assert a["state_seqs"] > 1000  # the newest state's seq, per tick
    assert a["compiled"] <= a["call"]  # no tick allocated, not even transiently
    assert a["kept"] <= a["kept_call"]  # and nothing was kept
    assert a["nrt_compiled"] == a["nrt_call"]  # nor from numba's own heap
    assert a["event_takes"] == 2  # a latent and a chunk, taken by the compiled ticks
    assert a["event"] <= a["event_call"]  # without allocating
    assert a["python"] > a["call"]  # the measurement sees a Python tick's allocations


def test_events_reach_python(rig) -> None:
    """Under the live driver, chunks arriving mid-run are each taken (their seqs reach the
    commands), and the latent going stale switches to hold: both events of the compiled
    loop's hand-over to Python."""
    loop = rig.loop
    rig.start_robot(10)
    sent_chunks: list[int] = []

    def feed() -> None:
        time.sleep(0.2)
        rig.send_latent()
        for _ in range(8):  # a chunk every 0.1 s for 0.8 s, each covering 0.3 s
            rig.send_chunk(time.monotonic_ns(), 20_000_000)
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


def test_inputs_from_known_sources_are_taken_in_compiled_ticks(rig) -> None:
    """The first latent and chunk of a source go through Python (it learns the source); the
    rest are checked and handed over by the compiled ticks. A hostile chunk (NaN) from the same
    source is left to the codec, dropped and counted, and never reaches the kernel; a chunk
    from another source is taken by Python. Commands follow every valid chunk taken."""
    import numpy as np

    from dualsys.bus.messages import ActionChunk

    loop = rig.loop
    rig.start_robot(10)
    sent: list[int] = []

    def feed() -> None:
        time.sleep(0.2)
        for i in range(12):  # a latent and a chunk every 0.1 s
            rig.send_latent()
            if i == 6:  # NaN actions from the policy's own source
                acts = np.full((CFG.policy.chunk_horizon, len(CFG.controlled_indices)), np.nan)
                rig.chunk.send(ActionChunk(actions=acts.astype(np.float32), t0_mono_ns=1,
                                           dt_ns=20_000_000))  # fmt: skip
            elif i == 9:  # a valid chunk from another source (same socket, its own name)
                rig.chunk.source = "intruder"
                rig.send_chunk(time.monotonic_ns(), 20_000_000)
                rig.chunk.source = "policy"
            else:
                rig.send_chunk(time.monotonic_ns(), 20_000_000)
                sent.append(rig.chunk.seq)
            time.sleep(0.1)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        run_loop(loop, StopFlag(), 1.6, 200_000)
    finally:
        feeder.join()
    cmds = rig.commands()
    taken = {c.chunk_seq for c in cmds}
    assert loop.chunk_sub.dropped["nonfinite"] == 1
    assert loop.k.trips == 0  # no NaN reached the kernel
    assert loop.compiled_takes["chunks"] >= 6, loop.compiled_takes
    assert loop.compiled_takes["latents"] >= 8, loop.compiled_takes
    assert loop.latent_in.via["shm"] >= 10
    assert sent[-1] in taken and len(set(sent) & taken) >= 7
    assert "intruder" in loop.chunk_sub._last_seq  # the other source's chunk: taken by Python
    # every valid chunk received was handed over (a busy machine may let one replace another)
    assert loop.chunk_sub.received == loop.chunks >= len(sent)
    assert loop.mon.ticks >= 0.9 * 1.6e9 / P


def test_latents_over_zeromq_are_taken_in_compiled_ticks(tmp_path) -> None:
    """Without the shm slot (a System 2 on another computer), the compiled ticks take the
    latents from the ZeroMQ socket themselves after the first, and their age keeps the loop
    following."""
    from dataclasses import replace

    cfg = replace(CFG, endpoints={k: v for k, v in CFG.endpoints.items() if k != "latent_local"})
    rig = ControlRig(cfg, tmp_path)
    try:
        loop = rig.loop
        assert loop.latent_in.slot is None
        rig.start_robot(10)

        def feed() -> None:
            for _ in range(12):
                rig.send_latent()
                rig.send_chunk(time.monotonic_ns(), 20_000_000)
                time.sleep(0.1)

        feeder = threading.Thread(target=feed)
        feeder.start()
        run_loop(loop, StopFlag(), 1.4, 200_000)
        feeder.join()
    finally:
        rig.close()
    assert loop.latent_in.via == {"shm": 0, "zmq": loop.latent_sub.received}
    assert loop.compiled_takes["latents"] >= 9, loop.compiled_takes
    assert loop.latent_sub.received >= 11 and loop.latent_sub.gaps == 0
    assert ("run", "ok") in [(e["state"], e["reason"]) for e in loop.events]


def test_stop_flag_ends_the_compiled_loop(rig) -> None:
    """A stop set while the compiled ticks run ends the loop at the next return to Python
    (a Stats part, within one Stats period)."""
    stop = StopFlag()
    threading.Timer(0.5, lambda: setattr(stop, "set", True)).start()
    t0 = time.monotonic()
    run_loop(rig.loop, stop, 30.0, 200_000)
    assert time.monotonic() - t0 < 0.5 + 2 / CFG.rates.stats_hz


def test_a_stall_is_skipped_counted_and_holds(rig) -> None:
    """The process stopped for 60 ms mid-run (SIGSTOP/SIGCONT from another process): the
    compiled loop wakes a dozen periods late and hands back to Python, which skips the missed
    periods (never catches up), counts them as misses with a cause, and latches the
    miss-streak hold; the commands after it carry the hold flag."""
    loop = rig.loop
    rig.start_robot(10)
    stall = subprocess.Popen(
        ["sh", "-c", f"sleep 0.5; kill -STOP {os.getpid()}; sleep 0.06; kill -CONT {os.getpid()}"]
    )
    causes = MissAttribution(-1)
    loop.miss_causes = causes.counts
    run_loop(loop, StopFlag(), 1.2, 200_000, causes)
    stall.wait()
    causes.close()
    cmds = rig.commands()
    assert loop.mon.skipped >= 8 and loop.mon.misses >= loop.mon.skipped
    assert causes.counts.sum() >= loop.mon.skipped
    assert any(e["state"] == "miss_streak" for e in loop.events), loop.events
    ticks = [c.tick for c in cmds]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # one command per tick run
    assert loop.mon.ticks - loop.mon.skipped == len(cmds)  # skipped periods sent nothing
    assert any(c.flags & Command.FLAG_MISS_HOLD for c in cmds)
