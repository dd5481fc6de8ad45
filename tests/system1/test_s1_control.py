"""The control loop's tick in-process: zero net allocation, safe states, command frames."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus.codec import decode, encode
from dualsys.bus.messages import ActionChunk, Command, Latent, RobotState
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.system1.chunks import SETTLE_SUPPORT, SUPPORT, Chunk, DelayEstimator, plan_next
from dualsys.system1.control import DEFAULT, HOLD, RUN, ControlLoop
from dualsys.system1.monitor import T_DONE, T_WAKE
from dualsys.system1.wire import CommandEncoder

CFG = config.load_robot("gr1")
LIM = CFG.limits()
N, H, NC = CFG.n_joints, CFG.policy.chunk_horizon, len(CFG.controlled_indices)
P = CFG.rates.control_period_ns


@pytest.fixture
def rig(tmp_path):
    ctx = zmq.Context()
    loop = ControlLoop(CFG, ctx, tmp_path)
    loop.configure()
    state = Publisher(ctx, CFG.endpoint("state", tmp_path), "robot")
    latent = Publisher(ctx, CFG.endpoint("latent", tmp_path), "system2")
    chunk = Publisher(ctx, CFG.endpoint("chunk", tmp_path), "policy")
    cmds = Subscriber(ctx, CFG.endpoint("command", tmp_path), (Command,), latest=False)
    time.sleep(0.3)  # let the connections settle
    loop.warm(100)
    yield loop, state, latent, chunk, cmds
    for s in (state, latent, chunk, cmds):
        s.close()
    loop.close()
    ctx.term()


def test_command_frames_decode_as_bus_messages() -> None:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://cmd")
    b.connect("inproc://cmd")
    enc = CommandEncoder(a, N, "control")
    q = np.linspace(-1, 1, N)
    for mode, tick in (("run", 1), ("hold", 2**40), ("damp", 3)):
        enc.send(q * tick % 1, -q, mode, tick)
        msg = decode(b.recv(), (Command,), {"command": {"q": (N,), "dq": (N,)}})
        assert msg.mode == mode and msg.tick == tick and msg.header.source == "control"
        np.testing.assert_array_equal(msg.q, q * tick % 1)
        np.testing.assert_array_equal(msg.dq, -q)
    assert enc.seq == 3
    a.close(0)
    b.close(0)
    ctx.term()


#: largest transient a tick may hold at once (B): a few ints and the argument boxing of the
#: compiled and ZeroMQ calls; a decoded message, a frame copy (the state frame is 1165 B) or
#: a new joint array (44 float64) does not fit
TRANSIENT_LIMIT = 1024


def _peak(fn, *args) -> tuple[int, int]:
    """(transient peak, net growth) in bytes of one call, under a running tracemalloc."""
    cur0, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    fn(*args)
    cur1, peak = tracemalloc.get_traced_memory()
    return peak - cur0, cur1 - cur0


def test_tick_allocates_nothing_over_10000_ticks(rig) -> None:
    """The Python tick (`update`: what replay and the live loop's event ticks run, with
    prefetch and rehearsal before it, the stage breakdown and the monitor after it) holds no
    transient beyond small ints and call boxing, and keeps nothing. What remains is the
    interpreter's: the ints of time.monotonic_ns and of the arithmetic on them (32 B each),
    numba's argument boxing of the compiled calls (state poll, tick body, stage record; a few
    hundred B) and pyzmq's getsockopt (latent, chunk), all freed before the tick ends. The
    live loop's steady-state ticks allocate nothing at all (test_s1_compiled_tick.py)."""
    loop, state, latent, chunk, _cmds = rig
    frame = encode(RobotState(q=LIM["default"], dq=np.zeros(N), tau=np.zeros(N)), 1, "robot")
    acts = np.tile(LIM["default"][CFG.controlled_indices], (H, 1)).astype(np.float32)
    t = time.monotonic_ns()
    loop.activate(t)

    def inputs(i: int) -> None:  # what arrives while the loop sleeps: state, latent, chunk
        state.send_raw(frame)
        subs = [loop.state_sub]
        if i % 20 == 0:
            _feed(loop, latent, chunk, t + i * P, acts)
            subs += [loop.latent_sub, loop.chunk_sub]
        for sub in subs:  # delivered before the prefetch (poll reads nothing)
            assert sub.sock.poll(1000)

    def tick(i: int) -> None:  # the work to the send, then the stage and monitor records
        loop.stamps[T_WAKE] = time.monotonic_ns()
        loop.update(t + i * P)
        loop.stamps[T_DONE] = time.monotonic_ns()
        loop.stages.record()
        loop.mon.tick(1000, 50_000, False)

    def quiet() -> bool:  # stats_step now builds no Stats (6 ticks of 100) and sends no Hello
        n = loop.tick
        return n % loop.stats_every >= 6 and n % loop.hello_every != 7

    for i in range(2000):  # warm what tracemalloc itself allocates
        inputs(i)
        loop.receive(t + i * P)
        tick(i)
        loop.stats_step(t + i * P)
    tracemalloc.start()
    try:
        # the measurement sees a decode: the same latent and chunk received by the tick itself
        inputs(0)
        seen, _ = _peak(loop.update, t + 2000 * P)
        worst = worst_stats = 0
        cur0, _ = tracemalloc.get_traced_memory()
        for i in range(2001, 12001):
            inputs(i)
            loop.receive(t + i * P)
            peak, _ = _peak(loop.rehearse, t + i * P)
            worst = max(worst, peak)
            peak, _ = _peak(tick, i)
            worst = max(worst, peak)
            was_quiet = quiet()
            peak, _ = _peak(loop.stats_step, t + i * P)
            if was_quiet:
                worst_stats = max(worst_stats, peak)
        cur1, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"transient peak: tick {worst} B, bookkeeping {worst_stats} B; decode tick {seen} B")
    assert seen > 2 * TRANSIENT_LIMIT  # a decode in the tick is seen (the latent alone: 2 KB)
    assert loop.state_frame.count > 9000 and loop.chunks > 400  # the paths really ran
    assert worst < TRANSIENT_LIMIT and worst_stats < TRANSIENT_LIMIT
    # a leak of even one small object per tick would be >= 10000 * 32 B
    assert cur1 - cur0 < 4096


def _feed(loop, latent, chunk, t, actions, latent_age_ns=0):
    latent.send(Latent(vector=np.zeros(CFG.system2.latent_dim, np.float32)), t - latent_age_ns)
    chunk.send(ActionChunk(actions=actions, t0_mono_ns=t, dt_ns=20_000_000, chunk_id=1))


def _run(loop, t0, ticks):
    qs = np.zeros((ticks, N))
    for i in range(ticks):
        loop.update(t0 + i * P)
        qs[i] = loop.k.q
    return qs


def test_safe_states_follow_latent_age_without_jumps(rig) -> None:
    loop, state, latent, chunk, _cmds = rig
    t = time.monotonic_ns()
    loop.activate(t)
    q0 = LIM["default"].copy()
    q0[CFG.controlled_indices] += 0.01
    q0 = np.clip(q0, LIM["min"], LIM["max"])
    state.send(RobotState(q=q0, dq=np.zeros(N), tau=np.zeros(N)))
    time.sleep(0.05)
    _run(loop, t, 2)
    assert loop.have_state and loop.safe == HOLD  # no chunk yet: hold the measured pose
    np.testing.assert_allclose(loop.k.q, q0, atol=1e-9)
    mid = ((LIM["min"] + LIM["max"]) / 2)[CFG.controlled_indices]
    acts = np.tile(mid, (H, 1)).astype(np.float32)
    _feed(loop, latent, chunk, t + 2 * P, acts)
    time.sleep(0.05)
    traj = [_run(loop, t + 2 * P, 60)]
    assert loop.safe == RUN
    # no new latent: after latent_stale_ms -> hold, after latent_dead_ms -> default pose
    stale = int(CFG.budgets.latent_stale_ms * 1e6) // P + 5
    traj.append(_run(loop, t + 62 * P, stale))
    assert loop.safe == HOLD
    dead = int(CFG.budgets.latent_dead_ms * 1e6) // P
    traj.append(_run(loop, t + (62 + stale) * P, dead + 1200))
    assert loop.safe == DEFAULT
    q = np.vstack(traj)
    np.testing.assert_allclose(q[-1], LIM["default"], atol=1e-4)
    v = np.diff(q, axis=0) / (P * 1e-9)
    assert np.all(np.abs(v) <= LIM["velocity"] + 1e-6)
    acc = np.diff(v, axis=0) / (P * 1e-9)
    assert np.all(np.abs(acc) <= LIM["accel"] * 1.001 + 1e-6)
    names = [e["state"] for e in loop.events]
    assert names == ["run", "hold", "default_pose"], loop.events


@pytest.mark.parametrize(("ahead_ns", "want"), [(100_000, RUN), (1_000_000_000, HOLD)])
def test_a_latent_stamped_just_after_the_tick_is_fresh(rig, ahead_ns, want) -> None:
    """A latent that arrived between a tick's deadline and its receive (stamped up to a period
    after the tick's time) is fresh: the loop runs, no one-tick "no latent" hold. One stamped
    far ahead (a remote clock off by a second) is still refused: hold."""
    loop, state, latent, chunk, _cmds = rig
    t = time.monotonic_ns()
    loop.activate(t)
    state.send(RobotState(q=LIM["default"].copy(), dq=np.zeros(N), tau=np.zeros(N)))
    time.sleep(0.05)
    _run(loop, t, 2)
    mid = ((LIM["min"] + LIM["max"]) / 2)[CFG.controlled_indices]
    _feed(loop, latent, chunk, t + 2 * P, np.tile(mid, (H, 1)).astype(np.float32), -ahead_ns)
    time.sleep(0.05)
    _run(loop, t + 2 * P, 3)
    assert loop.safe == want, loop.events
    assert [e["reason"] for e in loop.events] == (["ok"] if want == RUN else [])


def test_plan_freezes_what_runs_before_the_next_chunk() -> None:
    dt = 20_000_000
    cur = Chunk(np.arange(H * NC, dtype=np.float32).reshape(H, NC), t0_ns=0, dt_ns=dt)
    now = 8 * dt + 5_000_000  # 9 actions executed, 7 left
    plan = plan_next(cur, now, delay_ns=30_000_000, dt_ns=dt)
    assert plan.t0_ns == 8 * dt  # same grid, one action before the first unexecuted one
    np.testing.assert_array_equal(plan.prefix[0], cur.actions[8])
    # actions due before now + delay (+ spline support) are frozen
    assert plan.t0_ns + (plan.frozen - 1) * dt >= now + 30_000_000
    assert np.all(plan.weights[: plan.frozen] == 1) and np.all(plan.weights[plan.frozen :] < 1)
    cold = plan_next(None, now, 30_000_000, dt, hold=np.ones(NC))
    assert cold.frozen == 1 and cold.t0_ns == now + 30_000_000
    # settling after an instruction switch: fewer frozen actions, none soft-guided, and still
    # every action that runs before the new chunk arrives
    settle = plan_next(cur, now, delay_ns=30_000_000, dt_ns=dt, settling=True)
    assert settle.t0_ns == plan.t0_ns
    assert settle.frozen == plan.frozen - (SUPPORT - SETTLE_SUPPORT)
    assert settle.t0_ns + (settle.frozen - 1) * dt >= now + 30_000_000
    assert np.all(settle.weights[: settle.frozen] == 1)
    assert np.all(settle.weights[settle.frozen :] == 0)


def test_delay_estimate_follows_the_typical_latency_not_one_spike() -> None:
    est = DelayEstimator(initial_ns=40_000_000, window=8, margin=1.25, warmup=2)
    assert est.estimate_ns == 50_000_000  # before any measurement: the initial guess
    for lat in (900_000_000, 800_000_000):  # warm-up samples (cold caches) are ignored
        est.add(lat)
    for _ in range(8):
        est.add(12_000_000)
    assert est.estimate_ns == 15_000_000
    est.add(60_000_000)  # one slow chunk does not freeze more actions for the next 8
    assert est.estimate_ns == 15_000_000
    for _ in range(5):
        est.add(30_000_000)  # a lasting slow-down does
    assert est.estimate_ns == int(30_000_000 * 1.25)
