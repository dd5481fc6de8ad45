"""Offline replay of a recorded run through System 1's own control loop.

The recorded states, latents and chunks (the exact bytes from the MCAP file) are fed, tick by
tick, into a real `dualsys.system1.control.ControlLoop` over in-process ZeroMQ sockets, and
`ControlLoop.update(t_ns)` computes each command exactly as the live process did (same safe
state logic, same numba kernel, same warm-up and start-up state, same stop ramp). The commands
it sends are compared with the recorded ones.

A tick's command depends on its scheduled time t_ns and on which messages had arrived by then.
Both come from a `TickTable`:

- exact: given by whoever knows them (`--ticks FILE.npz`, as written by `TickTable.save`);
- inferred (`infer_ticks`): the live Command carries `tick` and its header send time, not the
  scheduled time, so deadlines are put on the loop's fixed period grid through the earliest
  send phase (or `origin_ns`, the loop's first deadline, when known), and a message counts as
  arrived by the later of its send time + `transit_ns` and the recorder's receive time.
  Start-up and hold reproduce bit for bit; once chunks drive the joints the inferred times
  (late by the loop's deadline-to-send time, tens of µs) and arrival ticks (may be off by one)
  make the reproduction approximate. Exact live replay needs, per Command, the scheduled
  tick time and the header seq of the chunk, latent and state the tick had taken.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import zmq
from mcap.reader import make_reader

from dualsys.bus.codec import DropError, decode
from dualsys.bus.messages import Command, Message
from dualsys.config import RobotConfig
from dualsys.record import TOPICS
from dualsys.system1.control import ControlLoop

#: inputs of the control loop, in the order it reads them each tick
INPUTS = ("state", "latent", "chunk")
DEFAULT_TRANSIT_NS = 200_000
_ids = itertools.count()


class ReplayError(ValueError):
    """The recording cannot be replayed (no control run in it, unreadable file, ...)."""


@dataclass
class Recorded:
    """One recorded message: the raw bus bytes and the decoded message."""

    data: bytes
    msg: Message
    log_time: int


@dataclass
class Recording:
    """Everything read from an MCAP file, per topic in send order."""

    path: Path
    robot: str
    topics: dict[str, list[Recorded]] = field(default_factory=dict)
    dropped: int = 0
    #: wall - monotonic clock offset of the recorder (ns), from its metadata; None if absent
    wall_minus_mono: int | None = None

    def recv_mono(self, item: Recorded) -> int:
        """The recorder's receive time of a message on the monotonic clock."""
        return item.log_time - (self.wall_minus_mono or 0)


def read_mcap(path: str | Path) -> Recording:
    """Read and validate every recorded message (invalid ones are counted, not replayed)."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ReplayError(f"{path}: cannot open: {exc.strerror or exc}") from None
    rec = Recording(path, "")
    with f:
        reader = make_reader(f)
        try:
            for md in reader.iter_metadata():
                if md.name == "dualsys":
                    rec.robot = md.metadata.get("robot", "")
                    clocks = (md.metadata.get("clock_wall_ns"), md.metadata.get("clock_mono_ns"))
                    if all(clocks):
                        rec.wall_minus_mono = int(clocks[0]) - int(clocks[1])
            for _schema, channel, m in reader.iter_messages(log_time_order=False):
                topic = channel.topic.lstrip("/")
                if topic not in TOPICS:
                    continue
                try:
                    msg = decode(m.data, (TOPICS[topic],))
                except DropError:
                    rec.dropped += 1
                    continue
                rec.topics.setdefault(topic, []).append(Recorded(m.data, msg, m.log_time))
        except Exception as exc:  # the mcap reader raises assorted errors on damaged files
            raise ReplayError(f"{path}: not a readable MCAP file: {exc}") from None
    for items in rec.topics.values():
        items.sort(key=lambda r: (r.msg.header.source, r.msg.header.seq))
    return rec


def ramp_ticks() -> int:
    """Length of the stop ramp the control process sends (ControlLoop.deactivate's default)."""
    return inspect.signature(ControlLoop.deactivate).parameters["ramp_ticks"].default


def control_run(rec: Recording) -> tuple[list[Command], list[Command]]:
    """The last control run in the recording: (loop-tick commands, stop-ramp commands).

    Warm-up commands (sent before the loop starts, ticks counted from 0 too) are skipped: the
    run starts at the last point where `tick` restarts at 0.
    """
    cmds = [r.msg for r in rec.topics.get("command", [])]
    if not cmds:
        raise ReplayError(f"{rec.path}: no commands recorded")
    starts = [i for i, c in enumerate(cmds) if c.tick == 0]
    if not starts:
        raise ReplayError(f"{rec.path}: the recording starts mid-run (no command with tick 0)")
    run = cmds[starts[-1] :]
    if any(b.tick != a.tick + 1 for a, b in itertools.pairwise(run)):
        raise ReplayError(f"{rec.path}: commands missing from the recording (tick gaps)")
    n = ramp_ticks()
    if len(run) > n and all(c.mode == "hold" for c in run[-n:]) and run[-n - 1].mode == "run":
        return run[:-n], run[-n:]
    return run, []


@dataclass
class TickTable:
    """Per loop tick: its scheduled time and, per input topic, the header seq of the newest
    message that had arrived by then (0 = none yet)."""

    t_ns: np.ndarray
    seq: dict[str, np.ndarray]
    exact: bool

    def save(self, path: str | Path) -> None:
        """Write the table as .npz (t_ns, state_seq, latent_seq, chunk_seq)."""
        np.savez(path, t_ns=self.t_ns, **{f"{k}_seq": v for k, v in self.seq.items()})

    @classmethod
    def load(cls, path: str | Path) -> TickTable:
        """Read a table written by `save` (an exact table)."""
        with np.load(path) as z:
            return cls(z["t_ns"].copy(), {k: z[f"{k}_seq"].copy() for k in INPUTS}, True)


def infer_ticks(
    rec: Recording,
    loop_cmds: list[Command],
    period_ns: int,
    transit_ns: int = DEFAULT_TRANSIT_NS,
    origin_ns: int | None = None,
) -> TickTable:
    """Estimate the tick table from recorded send times (see the module docstring).

    origin_ns: the loop's deadline grid origin (its first deadline) when known; otherwise the
    earliest send phase stands in for it, which is late by the shortest deadline-to-send time
    (tens of µs), the main source of replay differences.
    A message counts as arrived at the later of its send time + transit_ns and the recorder's
    receive time: the sender's I/O thread may hand it over milliseconds after the send stamp
    (the policy shares a busy core), and the recorder sees it about when the loop does.
    """
    sent = np.array([c.header.t_mono_ns for c in loop_cmds], np.int64)
    if origin_ns is None:
        rel = sent - sent[0]
        phase = ((rel + period_ns // 2) % period_ns) - period_ns // 2  # vs the first command
        origin_ns = int(sent[0]) + int(phase.min())  # earliest send phase ~ the deadline grid
    t_ns = origin_ns + ((sent - origin_ns) // period_ns) * period_ns
    seq = {}
    for topic in INPUTS:
        items = rec.topics.get(topic, [])
        times = np.array([r.msg.header.t_mono_ns + transit_ns for r in items], np.int64)
        if rec.wall_minus_mono is not None:
            times = np.maximum(times, [rec.recv_mono(r) for r in items])
        seqs = np.array([r.msg.header.seq for r in items], np.int64)
        order = np.argsort(times, kind="stable")
        times, seqs = times[order], seqs[order]
        idx = np.searchsorted(times, t_ns, side="right") - 1
        seq[topic] = np.where(idx >= 0, seqs[np.maximum(idx, 0)], 0)
    return TickTable(t_ns, seq, exact=False)


@dataclass
class ReplayResult:
    """Recorded vs replayed commands of one control run."""

    ticks: int
    ramp: int
    exact_inputs: bool
    q_max_abs: float
    dq_max_abs: float
    mode_mismatches: int
    first_mismatch_tick: int | None
    bit_identical: bool
    replayed_q: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        """JSON-ready numbers."""
        return {
            "ticks": self.ticks,
            "ramp_ticks": self.ramp,
            "tick_inputs": "exact" if self.exact_inputs else "inferred",
            "q_max_abs_diff": self.q_max_abs,
            "dq_max_abs_diff": self.dq_max_abs,
            "mode_mismatches": self.mode_mismatches,
            "first_mismatch_tick": self.first_mismatch_tick,
            "bit_identical": self.bit_identical,
        }


def _by_seq(rec: Recording, topic: str) -> dict[int, bytes]:
    return {r.msg.header.seq: r.data for r in rec.topics.get(topic, [])}


def replay(cfg: RobotConfig, rec: Recording, table: TickTable | None = None) -> ReplayResult:
    """Re-run the recorded control run through a real ControlLoop and compare the commands."""
    loop_cmds, ramp_cmds = control_run(rec)
    if table is None:
        table = infer_ticks(rec, loop_cmds, cfg.rates.control_period_ns)
    if len(table.t_ns) != len(loop_cmds):
        raise ReplayError(
            f"tick table has {len(table.t_ns)} ticks, the recorded run {len(loop_cmds)}"
        )
    tag = f"inproc://dualsys-replay-{next(_ids)}"
    cfg = replace(cfg, endpoints={name: f"{tag}-{name}" for name in cfg.endpoints})
    ctx = zmq.Context()
    feeds = {t: ctx.socket(zmq.PUB) for t in INPUTS}
    for t, sock in feeds.items():
        sock.bind(cfg.endpoints[t])
    loop = ControlLoop(cfg, ctx, "/nonexistent")
    out = ctx.socket(zmq.SUB)
    try:
        loop.configure()
        out.setsockopt(zmq.SUBSCRIBE, b"")
        out.setsockopt(zmq.RCVHWM, 0)
        out.connect(cfg.endpoints["command"])
        loop.warm()  # as the live process: leaves the kernel in the same state
        while out.poll(0):
            out.recv()
        data = {t: _by_seq(rec, t) for t in INPUTS}
        loop.activate(int(table.t_ns[0]) - loop.period_ns)
        last = dict.fromkeys(INPUTS, 0)
        got: list[Command] = []
        for k in range(len(loop_cmds)):
            for t in INPUTS:
                s = int(table.seq[t][k])
                if s and s != last[t]:
                    if s not in data[t]:
                        raise ReplayError(f"tick {k}: {t} message seq {s} is not in the recording")
                    feeds[t].send(data[t][s])
                    last[t] = s
            loop.update(int(table.t_ns[k]))
            got.append(decode(out.recv(zmq.NOBLOCK), (Command,)))
        if ramp_cmds:
            loop.deactivate(len(ramp_cmds))
            got += [decode(out.recv(zmq.NOBLOCK), (Command,)) for _ in ramp_cmds]
    finally:
        loop.close()
        out.close(0)
        for sock in feeds.values():
            sock.close(0)
        ctx.term()
    return _compare(loop_cmds + ramp_cmds, got, len(ramp_cmds), table.exact)


def _compare(want: list[Command], got: list[Command], ramp: int, exact: bool) -> ReplayResult:
    qw = np.array([c.q for c in want])
    qg = np.array([c.q for c in got])
    dw = np.array([c.dq for c in want])
    dg = np.array([c.dq for c in got])
    modes = [a.mode != b.mode or a.tick != b.tick for a, b in zip(want, got, strict=True)]
    differ = np.flatnonzero(
        np.any(qw != qg, axis=1) | np.any(dw != dg, axis=1) | np.array(modes, bool)
    )
    return ReplayResult(
        ticks=len(want) - ramp,
        ramp=ramp,
        exact_inputs=exact,
        q_max_abs=float(np.abs(qw - qg).max()),
        dq_max_abs=float(np.abs(dw - dg).max()),
        mode_mismatches=int(sum(modes)),
        first_mismatch_tick=int(want[differ[0]].tick) if len(differ) else None,
        bit_identical=len(differ) == 0,
        replayed_q=qg,
    )
