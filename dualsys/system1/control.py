"""The 200 Hz control process: one working thread, absolute deadlines, smooth safe states.

Lifecycle (ros2_control style): `configure()` allocates sockets and buffers, `activate()`
resets them (a stale command is never executed), `update(t_ns)` is the tick, `deactivate()`
ramps the robot to hold. Only `update` and the methods it calls run in the 200 Hz thread.

Each tick reads the newest robot state, chunk and latent without blocking, picks the safe
state from the latent age (fresh: follow the chunk; older than latent_stale_ms: hold; older
than latent_dead_ms: return smoothly to the default pose; no chunk yet: hold the measured
pose), computes the command in one numba call and sends it from a preallocated frame.

Every Command also carries what it was computed from: the tick's scheduled time, the header
seq of the newest state, latent and chunk taken, and flags (miss-streak hold, warm-up, stop
ramp), so `dualsys replay` can recompute a live run exactly (dualsys/replay.py).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus.codec import encode
from dualsys.bus.curve import BusSecurity
from dualsys.bus.latent_link import LatentIn
from dualsys.bus.limits import receive_spec
from dualsys.bus.messages import ActionChunk, Command, Hello, Latent, RobotState, Stats
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.config import RobotConfig
from dualsys.system1 import interp
from dualsys.system1.floor import CAUSES as MISS_CAUSES
from dualsys.system1.interp import KernelState
from dualsys.system1.monitor import (
    COMMAND,
    STAGES,
    T_CHUNK,
    T_DECIDE,
    T_KERNEL,
    T_LATENT,
    T_SENT,
    T_START,
    T_STATE,
    LoopMonitor,
    StageBreakdown,
)
from dualsys.system1.wire import CommandEncoder, LatestFrame
from dualsys.timing import Histogram

ROLE = "control"
BLEND_NS = interp.BLEND_NS
#: speed scale (fraction of the velocity limits) of the return to the default pose
DEFAULT_POSE_SPEED = 0.25
#: after a miss streak beyond the budget, hold for this long once misses stop
MISS_HOLD_NS = 1_000_000_000
SAFE_NAMES = ("run", "hold", "default_pose")
RUN, HOLD, DEFAULT = 0, 1, 2
_KERNEL_MODE = (interp.MODE_CHUNK, interp.MODE_HOLD, interp.MODE_DEFAULT)
MISS_HOLD, WARMUP, RAMP = Command.FLAG_MISS_HOLD, Command.FLAG_WARMUP, Command.FLAG_RAMP
#: command PUB queue per subscriber: the warm-up burst and ~10 s of a stalled recorder (the
#: robot's SUB conflates on arrival, so a queue never delays its newest command)
COMMAND_HWM = 2000
#: pause before the warm-up burst: subscribers still connecting to the command PUB (ipc
#: reconnects every 100 ms; a robot or recorder started first connects once this process
#: binds) join, so the burst and the first real commands reach them. The burst says "hold"
#: (and so does the stop ramp): the robot's watchdog guards only a stream it is following,
#: so the pause between the burst and the loop (and the end after the ramp) trips nothing.
JOIN_WAIT_S = 0.3
#: the tick's clock (CLOCK_MONOTONIC, as the loop's deadlines), bound once
_clock = time.monotonic_ns
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


class ControlLoop:
    """The control process's state and tick (see the module docstring for the lifecycle)."""

    def __init__(self, cfg: RobotConfig, ctx: zmq.Context, run_dir: str | Path) -> None:
        self.cfg, self.ctx, self.run_dir = cfg, ctx, Path(run_dir)
        self.period_ns = cfg.rates.control_period_ns
        b = cfg.budgets
        self.stale_ns = int(b.latent_stale_ms * 1e6)
        self.dead_ns = int(b.latent_dead_ms * 1e6)
        self.max_streak = b.max_consecutive_misses
        self.stats_every = max(1, round(cfg.rates.control_hz / cfg.rates.stats_hz))
        self.hello_every = cfg.rates.control_hz
        self.configured = False
        self.warming = False

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        """Create sockets, the kernel state and the command frames (not real-time)."""
        cfg, ep = self.cfg, self.cfg.endpoint
        n, H = cfg.n_joints, cfg.policy.chunk_horizon
        self.sec = sec = BusSecurity(self.ctx, cfg)  # CURVE on tcp:// links when configured
        names = ("state", "chunk", "latent", "command", "stats")
        eps = {name: ep(name, self.run_dir) for name in names}

        def sub(name: str, cls: type) -> Subscriber:
            curve = sec.curve(eps[name], bind=False)  # shapes and size limits of this robot
            return Subscriber(self.ctx, eps[name], (cls,), curve=curve, **receive_spec(cfg, name))

        self.state_sub = sub("state", RobotState)
        self.chunk_sub = sub("chunk", ActionChunk)
        self.latent_sub = sub("latent", Latent)
        # the latent: from the same-machine shm slot once System 2 writes it, else ZeroMQ
        self.latent_in = LatentIn(self.ctx, cfg, self.latent_sub, self.run_dir)
        self.cmd_pub = Publisher(
            self.ctx,
            eps["command"],
            ROLE,
            bind=True,
            hwm=COMMAND_HWM,
            curve=sec.curve(eps["command"], bind=True),
        )
        self.stats_pub = Publisher(
            self.ctx, eps["stats"], ROLE, bind=False, curve=sec.curve(eps["stats"], bind=False)
        )
        self.encoder = CommandEncoder(self.cmd_pub.sock, n, ROLE)
        self.state_frame = LatestFrame(self.state_sub)
        self.k = KernelState(cfg.limits(), cfg.controlled_indices, H, self.period_ns)
        # what the tick reads every time, bound once (no attribute walk, no view per tick)
        self._q, self._v = self.k.S[interp.S_Q], self.k.S[interp.S_V]
        self._chunk_sock = self.chunk_sub.sock
        self._scratch_I, self._scratch_S = self.k.I.copy(), self.k.S.copy()  # for `rehearse`
        self._scratch_q, self._scratch_v = self._scratch_S[interp.S_Q], self._scratch_S[interp.S_V]
        self.hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, n, os.getpid())
        self.stats = Stats(process=ROLE, values={})
        self.fifo = 0
        #: misses per cause (dualsys.system1.floor.CAUSES), filled by the loop's attribution
        self.miss_causes = np.zeros(len(MISS_CAUSES), np.int64)
        self.configured = True
        self.activate(time.monotonic_ns())

    def activate(self, now_ns: int) -> None:
        """Reset buffers and counters: hold, no chunk, no latent, fresh histograms."""
        self.k.reset(self.k.L[interp.L_DEFAULT])
        self.mon = LoopMonitor(self.period_ns)
        self.tick_total_us = Histogram()  # wake to end of bookkeeping (work + Stats share)
        self.stages = StageBreakdown()
        self.stamps = self.stages.stamps
        self.latent_age = -1  # of the last tick (ns; -1: no latent), recorded after the send
        self.have_state = False
        self.have_chunk = False
        self.chunk_end_ns = 0
        self.latent_t_ns = -1
        self.instruction_id = 0
        self.safe = HOLD
        self.mode_str = "hold"
        self.miss_hold_until = 0
        self.last_t_ns = now_ns
        self.tick = 0
        self.latent_seq = 0  # header seqs of the newest latent / chunk taken (0: none)
        self.chunk_seq = 0
        self.state_frame.seq = 0
        self.chunks = 0
        self.start_ns = now_ns
        self.events: list[dict] = []
        self._stats_phase = 0
        self._stats_cache: list[float] = []
        self._stage_cache: dict[str, float] = {}

    # ------------------------------------------------------------------ the tick
    def _take_chunk(self, msg: ActionChunk, t_ns: int) -> None:
        """Copy a new chunk into the kernel and blend the seam (200 Hz thread)."""
        if msg.dt_ns <= 0:  # the codec refuses these; kept so a direct caller cannot divide by 0
            self.chunk_sub.dropped["out_of_range"] += 1
            return
        # following chunks (safe state run): blend the seam at once; else `_set_safe` does
        # when the loop switches to run
        follow = self.safe == RUN
        self.k.take_chunk(msg.actions, msg.t0_mono_ns, msg.dt_ns, self.last_t_ns, follow)
        self.chunk_end_ns = msg.t0_mono_ns + (len(msg.actions) - 1) * msg.dt_ns
        self.have_chunk = True
        self.chunks += 1
        self.mon.chunk_latency_us.record((t_ns - msg.header.t_mono_ns + msg.latency_ns) // 1000)

    def _set_safe(self, new: int, t_ns: int, reason: str) -> None:
        """Switch safe state with a seam blend from the last command (200 Hz thread)."""
        k = self.k
        if new == HOLD:
            k.S[interp.S_HOLD] = k.S[interp.S_Q]
        k.I[interp.MODE] = _KERNEL_MODE[new]
        k.F[interp.SPEED] = DEFAULT_POSE_SPEED if new == DEFAULT else 1.0
        k.blend(self.last_t_ns, BLEND_NS)
        self.safe = new
        self.mode_str = "run"
        if len(self.events) < 1000:  # rare: allocation only on a state change
            self.events.append(
                {"t_s": (t_ns - self.start_ns) / 1e9, "state": SAFE_NAMES[new], "reason": reason}
            )

    def receive(self, t_ns: int) -> None:
        """Take the newest state, latent and chunk waiting, for the tick at t_ns (200 Hz thread).

        The tick calls it first; the live loop also calls it once after its sleep, before the
        spin to the deadline (prefetch, dualsys.system1.control_proc), so decoding what arrived
        during the sleep is done before the deadline (and brings the sockets and decode paths
        back into the caches the policy process evicted) and the tick only takes what came
        after. Taking a message early is the same as taking it at the tick: nothing else
        changes the loop's state in between, and a newer message replaces it exactly as when
        both wait together.
        """
        st = self.stamps
        if self.tick == 0:  # before the first command there is no last one: one period back
            self.last_t_ns = t_ns - self.period_ns
        # The state is received every tick (raw, no allocation) but decoded only when the
        # controller uses it: to start holding the measured pose.
        if self.state_frame.poll() and not self.have_state:
            s = self.state_frame.decode()
            if s is not None:
                self.have_state = True
                self.k.reset(s.q)
                self.mode_str = "run"
        st[T_STATE] = _clock()
        lat = self.latent_in.recv_latest()
        if lat is not None:
            self.latent_t_ns = lat.header.t_mono_ns
            self.instruction_id = lat.instruction_id
            self.latent_seq = lat.header.seq
        st[T_LATENT] = _clock()
        if self._chunk_sock.getsockopt(_EVENTS) & _POLLIN:
            ch = self.chunk_sub.recv_latest()
            if ch is not None:
                self.chunk_seq = ch.header.seq
                self._take_chunk(ch, t_ns)
        st[T_CHUNK] = _clock()

    def rehearse(self, t_ns: int) -> None:
        """Run the kernel for t_ns on scratch copies of its state and write the command into
        its frame (200 Hz thread; the live loop calls it in the spin before the deadline): the
        tick then finds its code and data in the caches. Changes nothing the tick reads (the
        send rewrites the frame)."""
        k = self.k
        np.copyto(self._scratch_I, k.I)
        np.copyto(self._scratch_S, k.S)
        interp.step(t_ns, self._scratch_I, k.F, k.actions, k.ctrl, k.L, self._scratch_S)
        frame = self.encoder.frames["hold" if self.warming else self.mode_str]
        np.copyto(frame.q, self._scratch_q)
        np.copyto(frame.dq, self._scratch_v)

    def update(self, t_ns: int) -> int:
        """One control tick for the scheduled time t_ns: read, decide, compute, send.

        Returns the time the command left (monotonic ns). Stamps each stage's end into
        `self.stages.stamps` (the breakdown of the run report).
        """
        st = self.stamps
        st[T_START] = _clock()
        self.receive(t_ns)
        # latent age: recorded into its histogram after the send (stats_step)
        age = self.latent_age = t_ns - self.latent_t_ns if self.latent_t_ns >= 0 else -1
        miss_hold = t_ns < self.miss_hold_until
        if self.have_state:
            if age > self.dead_ns:
                want, why = DEFAULT, "latent dead"
            elif age > self.stale_ns or age < 0:
                want, why = HOLD, "latent stale" if age >= 0 else "no latent"
            elif not self.have_chunk or t_ns > self.chunk_end_ns:
                want, why = HOLD, "no chunk"
            else:
                want, why = RUN, "ok"
            if want == RUN and miss_hold:
                want, why = HOLD, "deadline misses"
            if want != self.safe:
                self._set_safe(want, t_ns, why)
        st[T_DECIDE] = _clock()
        self.k.step(t_ns)
        st[T_KERNEL] = _clock()
        warming = self.warming
        self.encoder.send(
            self._q,
            self._v,
            "hold" if warming else self.mode_str,
            self.tick,
            t_ns,
            self.state_frame.seq,
            self.latent_seq,
            self.chunk_seq,
            (MISS_HOLD if miss_hold else 0) | (WARMUP if warming else 0),
        )
        self.last_t_ns = t_ns
        self.tick += 1
        sent = st[T_SENT] = _clock()
        return sent

    def on_misses(self, t_ns: int) -> None:
        """Called after a missed tick: a streak beyond the budget latches hold (200 Hz thread)."""
        if self.mon.streak > self.max_streak:
            if t_ns >= self.miss_hold_until and len(self.events) < 1000:
                self.events.append(
                    {
                        "t_s": (t_ns - self.start_ns) / 1e9,
                        "state": "miss_streak",
                        "reason": f"{self.mon.streak} consecutive deadline misses",
                    }
                )
            self.miss_hold_until = t_ns + MISS_HOLD_NS

    # ------------------------------------------------------------------ reporting
    def stats_step(self, now_ns: int) -> None:
        """Bookkeeping after the send: the latent age histogram every tick; the Stats work
        spread over a few ticks (each part < 0.1 ms), sent at the last part (200 Hz thread)."""
        if self.latent_age >= 0:
            self.mon.latent_age_us.record(self.latent_age // 1000)
        phase = self.tick % self.stats_every
        m = self.mon
        if phase == 0:
            self._stats_cache = m.p_lateness.many((50.0, 99.0, 99.9))
        elif phase == 1:
            self._stats_cache += m.p_work.many((50.0, 99.0))
        elif phase == 2:
            self._stats_cache += m.p_latent.many((50.0, 99.0))
        elif phase == 3:
            self._stats_cache += m.p_chunk.many((50.0, 99.0))
        elif phase == 4:
            self._stage_cache = {
                f"stage_{name}_p99_us": self.stages.pcts(i, (99.0,))[0]
                for i, name in enumerate(STAGES)
            }
            self._stage_cache["command_p99_us"] = self.stages.pcts(COMMAND, (99.0,))[0]
        elif phase == 5 and len(self._stats_cache) == 9:
            c = self._stats_cache
            elapsed = max(now_ns - self.start_ns, 1)
            self.stats.values = {
                "rate_hz": m.ticks * 1e9 / elapsed,
                **m.stats_values(c),
                **self._stage_cache,
                "chunks": float(self.chunks),
                "fifo": float(self.fifo),
                "safe_state": float(self.safe),
                "nan_guard_trips": float(self.k.trips),
                **{
                    f"misses_{n}": float(c)
                    for n, c in zip(MISS_CAUSES, self.miss_causes, strict=True)
                },
            }
            self.stats_pub.send(self.stats)
        if self.tick % self.hello_every == 7:
            self.stats_pub.send(self.hello)

    def dropped(self) -> dict[str, int]:
        """Dropped messages per reason over all subscribers."""
        total: Counter[str] = Counter()
        for sub in (self.state_sub, self.chunk_sub, self.latent_sub, self.latent_in.slot):
            if sub is not None:
                total.update(sub.dropped)
        return dict(total)

    def summary(self, scheduler: str, cpus: list[int], end_ns: int) -> dict:
        """The run summary written to {run_dir}/control.json."""
        m = self.mon
        lat = m.lateness_us.summary()
        work = m.work_us.summary()
        age = m.latent_age_us.summary(1000.0)
        chl = m.chunk_latency_us.summary(1000.0)
        elapsed = max(end_ns - self.start_ns, 1)
        return {
            "rate_hz": m.ticks * 1e9 / elapsed,
            "ticks": m.ticks,
            "deadline_misses": m.misses,
            "miss_rate": m.miss_rate,
            "max_consecutive_misses": m.max_streak,
            "lateness_us": {k: lat[k] for k in ("p50", "p99", "p999", "max")},
            "work_us": {k: work[k] for k in ("p50", "p99", "p999", "max")},
            "tick_stages_us": self.stages.stages(),
            "command_us": self.stages.summary(COMMAND),
            "latent_age_ms": {k: age[k] for k in ("p50", "p99", "max")},
            "latent_link": self.latent_in.via,  # latents taken from the shm slot / ZeroMQ
            "chunks": self.chunks,
            "chunk_latency_ms": {k: chl[k] for k in ("p50", "p99")},
            "scheduler": scheduler,
            "cpus": cpus,
            "dropped": self.dropped(),
            "command_send_dropped": self.encoder.dropped,
            "state_frames": self.state_frame.count,
            "lateness_hist": [[v, c] for v, c in m.lateness_us.buckets()],
            "safe_state_events": self.events,
            "nan_guard_trips": self.k.trips,
            "final_safe_state": SAFE_NAMES[self.safe],
        }

    # ------------------------------------------------------------------ warm-up, shutdown
    def warm(self, ticks: int = 400) -> None:
        """Run every path (decode of each message type, kernel in every mode, chunk hand-over,
        command send, stats) so the first real tick finds warm caches and compiled code."""
        time.sleep(JOIN_WAIT_S)  # late subscribers join before the first command is sent
        cfg = self.cfg
        n, H, nc = cfg.n_joints, cfg.policy.chunk_horizon, len(cfg.controlled_indices)
        t = time.monotonic_ns()
        q = self.k.L[interp.L_DEFAULT].copy()
        fake = {
            "state": encode(RobotState(q=q, dq=q * 0, tau=q * 0), 1, "warm"),
            "latent": encode(Latent(vector=np.zeros(cfg.system2.latent_dim, np.float32)), 1, "w"),
            "chunk": encode(
                ActionChunk(
                    actions=np.tile(q[cfg.controlled_indices], (H, 1)).astype(np.float32),
                    t0_mono_ns=t,
                    dt_ns=1_000_000_000 // cfg.rates.action_hz,
                ),
                1,
                "warm",
            ),
        }
        assert nc and n
        subs = {"state": self.state_sub, "latent": self.latent_sub, "chunk": self.chunk_sub}
        self.warming = True  # commands sent while warming say "hold": the robot keeps its pose
        for i in range(ticks):
            for name, sub in subs.items():  # decode through the real subscriber path
                sub._accept(fake[name])
            sf = self.state_frame
            sf.buf[: len(fake["state"])] = fake["state"]
            sf.n = len(fake["state"])
            sf.decode()
            ts = t + i * self.period_ns
            if i % 50 == 0:
                self._take_chunk(subs["chunk"].last, ts)
            self.have_state = True
            self.latent_t_ns = ts - (0 if i < ticks // 2 else self.dead_ns + 1)
            self.rehearse(ts)
            self.update(ts)
            self.stats_step(ts)
            self.stages.record()
        for sub in subs.values():
            sub.received = 0
            sub.gaps = 0
            sub._last_seq.clear()
            sub.last = None
        self.state_frame.n = 0
        self.state_frame.count = 0
        self.stats.values = {}
        self.warming = False
        self.activate(time.monotonic_ns())

    def deactivate(self, ramp_ticks: int = 50) -> None:
        """Ramp to hold: decelerate within the limits while sending mode 'hold' commands."""
        k = self.k
        k.S[interp.S_HOLD] = k.S[interp.S_Q]
        k.I[interp.MODE] = interp.MODE_HOLD
        k.F[interp.SPEED] = 1.0
        k.blend(self.last_t_ns, BLEND_NS)
        t = self.last_t_ns
        next_wake = time.monotonic_ns()
        for _ in range(ramp_ticks):
            t += self.period_ns
            next_wake += self.period_ns
            k.step(t)
            self.encoder.send(
                k.S[interp.S_Q],
                k.S[interp.S_V],
                "hold",
                self.tick,
                t,
                self.state_frame.seq,
                self.latent_seq,
                self.chunk_seq,
                RAMP,
            )
            self.tick += 1
            delay = next_wake - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)

    def close(self) -> None:
        """Close every socket and stop the CURVE authenticator (before the context ends)."""
        self.latent_in.close()
        for s in (self.state_sub, self.chunk_sub, self.latent_sub, self.cmd_pub, self.stats_pub):
            s.close()
        self.sec.close()
