"""The 200 Hz control process: one working thread, absolute deadlines, smooth safe states.

Lifecycle (ros2_control style): `configure()` allocates sockets and buffers, `activate()`
resets them (a stale command is never executed), `update(t_ns)` is the tick, `deactivate()`
ramps the robot to hold. Only `update` and the methods it calls run in the 200 Hz thread.

Each tick reads the newest robot state, chunk and latent without blocking, picks the safe
state from the latent age (fresh: follow the chunk; older than latent_stale_ms: hold; older
than latent_dead_ms: return smoothly to the default pose; no chunk yet: hold the measured
pose), computes the command and sends it from a preallocated frame: the decision, the kernel
and the send are one compiled call (`dualsys.system1.tick.tick_body`), the same one the live
loop's compiled ticks make (`run_ticks`, driven by dualsys.system1.control_proc.run_loop).
The loop's variables live in one int64 array `v` (V_* of dualsys.system1.tick) that both the
Python methods (through properties) and the compiled code read and write.

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
from dualsys.system1 import tick as tk
from dualsys.system1.floor import CAUSES as MISS_CAUSES
from dualsys.system1.interp import KernelState
from dualsys.system1.monitor import (
    COMMAND,
    STAGES,
    T_CHUNK,
    T_LATENT,
    T_SENT,
    T_START,
    T_STATE,
    LoopMonitor,
    StageBreakdown,
)
from dualsys.system1.native import scratch
from dualsys.system1.tick import DEFAULT, HOLD, RUN, SAFE_NAMES
from dualsys.system1.wire import MODE_INDEX, MODES, CommandEncoder, LatestFrame
from dualsys.timing import Histogram

ROLE = "control"
BLEND_NS = interp.BLEND_NS
#: after a miss streak beyond the budget, hold for this long once misses stop
MISS_HOLD_NS = 1_000_000_000
RAMP, WARMUP = Command.FLAG_RAMP, Command.FLAG_WARMUP
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
__all__ = ["DEFAULT", "HOLD", "RUN", "SAFE_NAMES", "ControlLoop"]


def _var(i: int, kind: type = int) -> property:
    """A loop variable: word i of `ControlLoop.v`, read as kind."""

    def get(self: ControlLoop) -> int:
        return kind(self.v[i])

    def set_(self: ControlLoop, value: int) -> None:
        self.v[i] = value

    return property(get, set_)


class ControlLoop:
    """The control process's state and tick (see the module docstring for the lifecycle)."""

    have_state = _var(tk.V_HAVE_STATE, bool)
    have_chunk = _var(tk.V_HAVE_CHUNK, bool)
    chunk_end_ns = _var(tk.V_CHUNK_END)
    latent_t_ns = _var(tk.V_LATENT_T)  # header time of the newest latent (-1: none)
    safe = _var(tk.V_SAFE)  # RUN, HOLD or DEFAULT
    miss_hold_until = _var(tk.V_MISS_HOLD_UNTIL)
    last_t_ns = _var(tk.V_LAST_T)  # scheduled time of the last command sent
    tick = _var(tk.V_TICK)
    latent_seq = _var(tk.V_LATENT_SEQ)  # header seqs of the newest latent / chunk taken (0: none)
    chunk_seq = _var(tk.V_CHUNK_SEQ)
    warming = _var(tk.V_WARMING, bool)
    latent_age = _var(tk.V_LATENT_AGE)  # of the last tick (ns; -1: no latent)

    @property
    def mode_str(self) -> str:
        """The mode the commands say ("hold" until the state is known, then "run")."""
        return MODES[self.v[tk.V_MODE]]

    @mode_str.setter
    def mode_str(self, mode: str) -> None:
        self.v[tk.V_MODE] = MODE_INDEX[mode]

    def __init__(self, cfg: RobotConfig, ctx: zmq.Context, run_dir: str | Path) -> None:
        self.cfg, self.ctx, self.run_dir = cfg, ctx, Path(run_dir)
        self.period_ns = cfg.rates.control_period_ns
        b = cfg.budgets
        self.stale_ns = int(b.latent_stale_ms * 1e6)
        self.dead_ns = int(b.latent_dead_ms * 1e6)
        self.max_streak = b.max_consecutive_misses
        self.stats_every = max(1, round(cfg.rates.control_hz / cfg.rates.stats_hz))
        self.hello_every = cfg.rates.control_hz
        self.v = np.zeros(tk.N_V, np.int64)
        self.v[tk.V_STALE], self.v[tk.V_DEAD] = self.stale_ns, self.dead_ns
        self.v[tk.V_PERIOD] = self.period_ns
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
        self.chunk_view = self.chunk_sub.view(ActionChunk, "actions")
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
        # the arrays of the compiled tick (dualsys.system1.tick), grouped once
        k, enc, sf = self.k, self.encoder, self.state_frame
        self._K = (k.I, k.F, k.actions, k.ctrl, k.L, k.S)
        self._KS = (self._scratch_I, self._scratch_S)
        self._E = (enc.addr, enc.bufs, enc.lens, enc.offs, enc.ctr)
        self._SF = (sf.buf, sf.meta, sf.max_msgs)
        self._io = scratch()
        self.inputs = np.zeros(tk.N_IN, np.int64)  # IN_*: where new inputs would show
        self.inputs[tk.IN_CHUNK] = self._chunk_sock.underlying
        self.inputs[tk.IN_LATENT] = self.latent_sub.sock.underlying
        self.inputs[tk.IN_STATE] = sf.addr
        self.regs = np.zeros(tk.N_R, np.int64)  # R_*: the live loop's registers (run_loop)
        # the compiled ticks' own takes (tick.take_inputs): the latent's buffers (slot, socket)
        # and the chunk's, their check plans and views, and what they took (X_*)
        lv, cv = self.latent_in.view, self.chunk_view
        slot = self.latent_in.slot
        slot_buf = slot.slot.arr if slot is not None else np.zeros(1, np.uint8)
        self.chunk_buf = np.zeros(self.chunk_sub.max_bytes, np.uint8)
        self.latent_buf = np.zeros(self.latent_sub.max_bytes, np.uint8)
        self._LIN = (slot_buf, self.latent_buf, lv.plan.args, lv.args)
        self._CIN = (self.chunk_buf, cv.plan.args, cv.args, cv.array)
        self.taken = np.zeros(tk.N_X, np.int64)
        self.pending = np.zeros((tk.PENDING, 4), np.int64)
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
        self._ST = (self.stamps, self.stages.counts, self.stages.maxs)
        self.v[tk.V_WHY] = 0
        self.regs[tk.R_NPEND] = 0
        self.taken[:] = 0
        #: latents and chunks the compiled ticks took themselves (the rest: Python's receive)
        self.compiled_takes = {"latents": 0, "chunks": 0}
        self.latent_age = -1  # of the last tick (ns; -1: no latent), recorded after the send
        self.have_state = False
        self.have_chunk = False
        self.chunk_end_ns = 0
        self.latent_t_ns = -1
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
    def _take_chunk(self, t_ns: int) -> None:
        """Hand the chunk just stored in `chunk_view` over to the kernel for the tick at t_ns
        (`tick.apply_chunk`, as the compiled ticks do; 200 Hz thread)."""
        cv = self.chunk_view
        lat = tk.apply_chunk(t_ns, self.v, self._K, cv.meta, cv.array)
        self.chunks += 1
        self.mon.chunk_latency_us.record(lat // 1000)

    def fold_taken(self) -> None:
        """Count what the compiled ticks took since the last call (`taken`, X_*) into the
        subscribers, the latent link and the chunk latency histogram (after they return)."""
        X = self.taken  # noqa: N806
        n = int(X[tk.X_LATENTS])
        if n:
            li = self.latent_in
            li.slot.add_taken(li.view, n, int(X[tk.X_LATENT_GAPS]))
            li.slot.slot.mark_seen(int(self.inputs[tk.IN_SEEN]))
            li.shm_taken += n
            li.view.count += n
            self.compiled_takes["latents"] += n
        n = int(X[tk.X_ZLATENTS])
        if n:
            li = self.latent_in
            self.latent_sub.add_taken(li.view, n, int(X[tk.X_ZLATENT_GAPS]))
            li.zmq_taken += n
            li.view.count += n
            self.compiled_takes["latents"] += n
        n = int(X[tk.X_CHUNKS])
        if n:
            self.compiled_takes["chunks"] += n
            self.chunk_sub.add_taken(self.chunk_view, n, int(X[tk.X_CHUNK_GAPS]))
            self.chunk_view.count += n
            self.chunks += n
            for lat in X[tk.X_LAT0 : tk.X_LAT0 + X[tk.X_NLAT]].tolist():
                self.mon.chunk_latency_us.record(lat // 1000)
        for i in (tk.X_LATENTS, tk.X_LATENT_GAPS, tk.X_CHUNKS, tk.X_CHUNK_GAPS, tk.X_NLAT,
                  tk.X_ZLATENTS, tk.X_ZLATENT_GAPS):  # fmt: skip
            X[i] = 0

    def note_safe(self, t_ns: int) -> None:
        """Log the safe-state switch the tick at t_ns made (the compiled tick switched; this
        records it, after the send: allocation only on a state change)."""
        if len(self.events) < 1000:
            self.events.append(
                {
                    "t_s": (t_ns - self.start_ns) / 1e9,
                    "state": SAFE_NAMES[self.safe],
                    "reason": tk.WHY[self.v[tk.V_WHY]],
                }
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
        tk.first_command(t_ns, self.v)
        # The state is received every tick (raw, no allocation) but decoded only when the
        # controller uses it: to start holding the measured pose.
        if self.state_frame.poll() and not self.have_state:
            s = self.state_frame.decode()
            if s is not None:
                self.have_state = True
                self.k.reset(s.q)
                self.mode_str = "run"
        st[T_STATE] = _clock()
        n = int(self.taken[tk.X_PY_LATENT])
        if n:  # a latent the compiled ticks received from ZeroMQ and left to the codec
            self.taken[tk.X_PY_LATENT] = 0
            if self.latent_in.take_left(self.latent_buf, n):
                tk.apply_latent(self.v, self.latent_in.view.meta)
        if self.latent_in.take():
            tk.apply_latent(self.v, self.latent_in.view.meta)
        st[T_LATENT] = _clock()
        n = int(self.taken[tk.X_PY_CHUNK])
        if n:  # a chunk the compiled ticks received and left to the codec
            self.taken[tk.X_PY_CHUNK] = 0
            if n > len(self.chunk_buf):
                self.chunk_sub.dropped["oversized"] += 1
            elif self.chunk_sub.take_bytes(self.chunk_view, self.chunk_buf, n):
                self._take_chunk(t_ns)
        if self._chunk_sock.getsockopt(_EVENTS) & _POLLIN and self.chunk_sub.take(self.chunk_view):
            self._take_chunk(t_ns)
        st[T_CHUNK] = _clock()

    def rehearse(self, t_ns: int) -> None:
        """Run the kernel for t_ns on scratch copies of its state and write the command into
        its frame (200 Hz thread; the live loop calls it in the spin before the deadline): the
        tick then finds its code and data in the caches. Changes nothing the tick reads (the
        send rewrites the frame)."""
        tk.rehearse(t_ns, self.v, self._K, self._KS, self._E)

    def update(self, t_ns: int) -> int:
        """One control tick for the scheduled time t_ns: read, decide, compute, send.

        Returns the time the command left (monotonic ns). Stamps each stage's end into
        `self.stages.stamps` (the breakdown of the run report).
        """
        st = self.stamps
        st[T_START] = _clock()
        self.receive(t_ns)
        if tk.tick_body(t_ns, self.v, self._K, self._E, self.state_frame.seq, st, self._io):
            self.note_safe(t_ns)
        return int(st[T_SENT])

    def probe_inputs(self) -> None:
        """Tell the compiled code where a new latent would show first (the slot may have been
        opened or replaced since it last ran)."""
        _, a, seen, next_open, live = self.latent_in.probe()
        self.inputs[tk.IN_HAS_SLOT : tk.IN_HAS_SLOT + 5] = (
            self.latent_in.slot is not None,
            a,
            seen,
            next_open,
            live,
        )

    @property
    def tick_args(self) -> tuple:
        """The arguments of `tick.run_ticks` for this loop."""
        return (
            self.regs, self.v, self._K, self._KS, self._E, self._SF, self._ST, self.inputs,
            self.pending, self._LIN, self._CIN, self.taken, self._io,
        )  # fmt: skip

    def run_ticks(self) -> int:
        """Run the live loop's compiled ticks from its registers `regs` until Python is needed
        (dualsys.system1.tick.run_ticks); returns the event."""
        self.probe_inputs()
        ev = tk.run_ticks(*self.tick_args)
        self.state_frame.count_drops()
        self.fold_taken()
        return ev

    def flush_pending(self) -> None:
        """Record the compiled ticks' lateness, work, total and latent age into the monitor's
        histograms (after a send: a few µs a tick)."""
        m, total, age = self.mon, self.tick_total_us, self.mon.latent_age_us
        for row in self.pending[: self.regs[tk.R_NPEND]].tolist():
            m.tick(row[tk.P_LATE], row[tk.P_WORK], False)
            total.record(row[tk.P_TOTAL] // 1000)
            if row[tk.P_AGE] >= 0:
                age.record(row[tk.P_AGE] // 1000)
        self.regs[tk.R_NPEND] = 0

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
            "skipped_periods": m.skipped,  # counted in ticks and misses; no command was sent
            "miss_rate": m.miss_rate,
            "max_consecutive_misses": m.max_streak,
            "lateness_us": {k: lat[k] for k in ("p50", "p99", "p999", "max")},
            "work_us": {k: work[k] for k in ("p50", "p99", "p999", "max")},
            "tick_stages_us": self.stages.stages(),
            "command_us": self.stages.summary(COMMAND),
            "latent_age_ms": {k: age[k] for k in ("p50", "p99", "max")},
            "latent_link": self.latent_in.via,  # latents taken from the shm slot / ZeroMQ
            "chunks": self.chunks,
            "inputs_taken_compiled": dict(self.compiled_takes),
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
        lat, chunk = (np.frombuffer(fake[k], np.uint8) for k in ("latent", "chunk"))
        self.warming = True  # commands sent while warming say "hold": the robot keeps its pose
        for i in range(ticks):
            for name, sub in subs.items():  # the codec (state; what the check leaves to it)
                sub._accept(fake[name])
            self.latent_sub.take_bytes(self.latent_in.view, lat, len(lat))  # the compiled check
            tk.apply_latent(self.v, self.latent_in.view.meta)
            self.chunk_sub.take_bytes(self.chunk_view, chunk, len(chunk))
            sf = self.state_frame
            sf.put(fake["state"])
            sf.decode()
            ts = t + i * self.period_ns
            if i % 50 == 0:
                self._take_chunk(ts)
            self.have_state = True
            self.latent_t_ns = ts - (0 if i < ticks // 2 else self.dead_ns + 1)
            self.rehearse(ts)
            self.update(ts)
            self.stats_step(ts)
            self.stages.record()
        # the stop ramp's compiled entries, called from Python there (kernel step, seam blend,
        # frame send): compiled or loaded now, not in the ramp (a cold numba cache took seconds)
        ts = t + ticks * self.period_ns
        self.k.blend(ts, BLEND_NS)
        self.k.step(ts)
        self.encoder.send(self._q, self._v, "hold", self.tick, ts, self.state_frame.seq,
                          self.latent_seq, self.chunk_seq, WARMUP)  # fmt: skip
        self.latent_in.view.clear()
        self.chunk_view.clear()
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
        # load the live loop's compiled ticks now (from numba's cache, or compile): its first
        # call in the loop would otherwise wake late. An ended window returns at once.
        self.regs[:] = 0
        self.regs[tk.R_STATS_EVERY] = self.regs[tk.R_HELLO_EVERY] = 1
        self.run_ticks()

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
