"""Offline replay of a recorded run through System 1's own control loop.

The recorded states, latents and chunks (the exact bytes from the MCAP file) are fed, tick by
tick, into a real `dualsys.system1.control.ControlLoop` over in-process ZeroMQ sockets, and
`ControlLoop.update(t_ns)` computes each command exactly as the live process did (same safe
state logic, same numba kernel, same warm-up and start-up state, same stop ramp). The commands
it sends are compared with the recorded ones, bit for bit.

A tick's command depends on its scheduled time t_ns, on which messages it had taken by then,
and on whether a deadline-miss streak held it. All three travel in the control loop's own
Command (`t_ns`, `state_seq` / `latent_seq` / `chunk_seq`, `flags`; see
`dualsys.bus.messages.Command`), so the tick table of a live recording comes from the recording
itself (`ticks_from_commands`) and the replay is exact: `dualsys replay run.mcap` reproduces
every recorded command of a live `dualsys up --record run.mcap` run with a max abs difference
of 0.0. The loop's warm-up commands (FLAG_WARMUP) are skipped and the stop ramp (FLAG_RAMP) is
replayed through `ControlLoop.deactivate`, after the inputs its commands say the loop took
after its last tick (the prefetch of a tick that a stop cut short).

The seq numbers name messages per publisher; when a publisher restarted (System 2 or the
policy after a crash) a seq can occur twice in the recording: the replay takes the occurrence
the recorder received last before the command (within `SEQ_SLACK_NS`). A latent or chunk the loop
took but the recorder did not get (PUB drops on a full queue when the recorder is starved of
CPU for seconds) cannot be fed: the replay stops with a ReplayError naming the tick, topic and
seq. States are different: the loop uses only the first one (to hold the measured pose), so a
later state missing from the recording is skipped and counted (`unrecorded_states`).

Recordings whose Commands carry no tick data (producers other than the control loop, which
leave the fields 0) can still be replayed with a tick table given as `--ticks FILE.npz`
(`TickTable.save`) or estimated by `infer_ticks` (`--infer`): deadlines put on the loop's
fixed period grid from the send times, a message counted as arrived by the later of its send
time + `transit_ns` and the recorder's receive time. Inferred tables reproduce start-up and
hold bit for bit; once chunks drive the joints they are only approximate (0.3-1.4 rad off on
live runs), which is why the loop now records its inputs.
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
from dualsys.record import RAW_PREFIX, TOPICS
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
        try:
            reader = make_reader(f)
            for md in reader.iter_metadata():
                if md.name == "dualsys":
                    rec.robot = md.metadata.get("robot", "")
                    clocks = (md.metadata.get("clock_wall_ns"), md.metadata.get("clock_mono_ns"))
                    if all(clocks):
                        rec.wall_minus_mono = int(clocks[0]) - int(clocks[1])
            for _schema, channel, m in reader.iter_messages(log_time_order=False):
                # raw bus bytes: /dualsys/raw/TOPIC (older recordings: /TOPIC)
                topic = channel.topic.removeprefix(RAW_PREFIX).lstrip("/")
                if topic not in TOPICS or channel.message_encoding != "msgpack":
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


def carries_ticks(cmds: list[Command]) -> bool:
    """True when the commands carry their tick data (sent by the control loop: t_ns > 0)."""
    return bool(cmds) and all(c.t_ns > 0 for c in cmds)


def _control_items(rec: Recording) -> tuple[list[Recorded], list[Recorded]]:
    items = rec.topics.get("command", [])
    if not items:
        raise ReplayError(f"{rec.path}: no commands recorded")
    exact = carries_ticks([r.msg for r in items])
    if exact:  # the loop's warm-up commands say so; they are not part of the run
        items = [r for r in items if not r.msg.flags & Command.FLAG_WARMUP]
    starts = [i for i, r in enumerate(items) if r.msg.tick == 0]
    if not starts:
        raise ReplayError(f"{rec.path}: the recording starts mid-run (no command with tick 0)")
    run = items[starts[-1] :]
    if any(b.msg.tick != a.msg.tick + 1 for a, b in itertools.pairwise(run)):
        raise ReplayError(f"{rec.path}: commands missing from the recording (tick gaps)")
    if exact:
        ramp = [i for i, r in enumerate(run) if r.msg.flags & Command.FLAG_RAMP]
        if ramp and ramp != list(range(ramp[0], len(run))):
            raise ReplayError(f"{rec.path}: stop-ramp commands in the middle of the run")
        cut = ramp[0] if ramp else len(run)
        return run[:cut], run[cut:]
    n = ramp_ticks()  # no flags: a trailing run of n holds after "run" is the stop ramp
    cmds = [r.msg for r in run]
    if len(run) > n and all(c.mode == "hold" for c in cmds[-n:]) and cmds[-n - 1].mode == "run":
        return run[:-n], run[-n:]
    return run, []


def control_run(rec: Recording) -> tuple[list[Command], list[Command]]:
    """The last control run in the recording: (loop-tick commands, stop-ramp commands).

    Warm-up commands (sent before the loop starts, ticks counted from 0 too) are skipped: by
    their flag when the commands carry tick data, else the run starts at the last point where
    `tick` restarts at 0.
    """
    loop, ramp = _control_items(rec)
    return [r.msg for r in loop], [r.msg for r in ramp]


@dataclass
class TickTable:
    """Per loop tick: its scheduled time and, per input topic, the header seq of the newest
    message that had arrived by then (0 = none yet); optionally the Command flags (for the
    miss-streak hold). `source`: "recorded", "file", "inferred" or "given"."""

    t_ns: np.ndarray
    seq: dict[str, np.ndarray]
    exact: bool
    flags: np.ndarray | None = None
    source: str = "given"

    def save(self, path: str | Path) -> None:
        """Write the table as .npz (t_ns, state_seq, latent_seq, chunk_seq[, flags])."""
        extra = {} if self.flags is None else {"flags": self.flags}
        np.savez(path, t_ns=self.t_ns, **{f"{k}_seq": v for k, v in self.seq.items()}, **extra)

    @classmethod
    def load(cls, path: str | Path) -> TickTable:
        """Read a table written by `save` (an exact table)."""
        with np.load(path) as z:
            flags = z["flags"].copy() if "flags" in z.files else None
            seq = {k: z[f"{k}_seq"].copy() for k in INPUTS}
            return cls(z["t_ns"].copy(), seq, True, flags, "file")


def ticks_from_commands(loop_cmds: list[Command]) -> TickTable:
    """The exact tick table carried by the control loop's own Commands."""
    if not carries_ticks(loop_cmds):
        raise ReplayError("the recorded commands carry no tick data (t_ns = 0): use --infer")
    t_ns = np.array([c.t_ns for c in loop_cmds], np.int64)
    seq = {t: np.array([getattr(c, f"{t}_seq") for c in loop_cmds], np.int64) for t in INPUTS}
    flags = np.array([c.flags for c in loop_cmds], np.int64)
    return TickTable(t_ns, seq, True, flags, "recorded")


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
    return TickTable(t_ns, seq, exact=False, source="inferred")


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
    inputs: str = ""
    tick_field_mismatches: int = 0
    unrecorded_states: int = 0

    def summary(self) -> dict:
        """JSON-ready numbers."""
        return {
            "ticks": self.ticks,
            "ramp_ticks": self.ramp,
            "tick_inputs": self.inputs or ("exact" if self.exact_inputs else "inferred"),
            "q_max_abs_diff": self.q_max_abs,
            "dq_max_abs_diff": self.dq_max_abs,
            "mode_mismatches": self.mode_mismatches,
            "tick_field_mismatches": self.tick_field_mismatches,
            "unrecorded_states": self.unrecorded_states,
            "first_mismatch_tick": self.first_mismatch_tick,
            "bit_identical": self.bit_identical,
        }


#: a seq that occurs twice (the publisher restarted) resolves to the occurrence the recorder
#: received last before the command, allowing for this much receive-order skew
SEQ_SLACK_NS = 200_000_000


class _Inputs:
    """The recorded messages of one input topic, looked up by header seq."""

    def __init__(self, rec: Recording, topic: str) -> None:
        self.topic = topic
        self.by_seq: dict[int, list[Recorded]] = {}
        for r in sorted(rec.topics.get(topic, []), key=lambda r: r.log_time):
            self.by_seq.setdefault(r.msg.header.seq, []).append(r)

    def pick(self, seq: int, cmd_log_time: int | None) -> Recorded | None:
        """The message with this seq the loop took before the command logged at cmd_log_time."""
        found = self.by_seq.get(seq)
        if not found:
            return None
        if len(found) == 1 or cmd_log_time is None:
            return found[-1]
        before = [r for r in found if r.log_time <= cmd_log_time + SEQ_SLACK_NS]
        return before[-1] if before else found[0]


def replay(cfg: RobotConfig, rec: Recording, table: TickTable | None = None) -> ReplayResult:
    """Re-run the recorded control run through a real ControlLoop and compare the commands.

    table: the per-tick inputs; by default the ones the recorded Commands carry, or inferred
    from send times when they carry none (see the module docstring).
    """
    loop_items, ramp_items = _control_items(rec)
    loop_cmds = [r.msg for r in loop_items]
    ramp_cmds = [r.msg for r in ramp_items]
    if table is None:
        if carries_ticks(loop_cmds):
            table = ticks_from_commands(loop_cmds)
        else:
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
        data = {t: _Inputs(rec, t) for t in INPUTS}
        loop.activate(int(table.t_ns[0]) - loop.period_ns)
        last: dict[str, Recorded | None] = dict.fromkeys(INPUTS)
        got: list[Command] = []
        unfed = np.zeros(len(loop_cmds) + len(ramp_cmds), bool)  # newest state not fed
        missing: set[int] = set()

        def feed(k: int, seqs: dict[str, int], log_time: int, cmd: Command) -> bool:
            """Send the recorded inputs of seqs the loop has not been sent; True if any."""
            sent = False
            for t in INPUTS:
                s = seqs[t]
                if not s:
                    continue
                item = data[t].pick(s, log_time)
                if item is None and t == "state" and loop.have_state:
                    unfed[k] = True  # only the first state is used: an unused one may be missing
                    missing.add(s)
                    continue
                if item is None:
                    raise ReplayError(
                        f"tick {cmd.tick}: the loop took {t} seq {s}, which is not in the recording"
                    )
                if item is not last[t]:
                    feeds[t].send(item.data)
                    last[t] = item
                    sent = True
            return sent

        for k in range(len(loop_cmds)):
            t_k = int(table.t_ns[k])
            feed(k, {t: int(table.seq[t][k]) for t in INPUTS}, loop_items[k].log_time,
                 loop_cmds[k])  # fmt: skip
            if table.flags is not None:  # a miss streak held this tick (its timing is not replayed)
                miss = int(table.flags[k]) & Command.FLAG_MISS_HOLD
                loop.miss_hold_until = t_k + 1 if miss else 0
            loop.update(t_k)
            got.append(decode(out.recv(zmq.NOBLOCK), (Command,)))
        if ramp_cmds:
            # inputs the live loop took after its last tick (the prefetch of a tick the stop
            # ended) travel in the ramp's commands: take them before it, as it did
            r0 = ramp_cmds[0]
            seqs = {t: getattr(r0, f"{t}_seq") for t in INPUTS}
            if feed(len(loop_cmds), seqs, ramp_items[0].log_time, r0):
                loop.receive(int(table.t_ns[-1]) + loop.period_ns)
            loop.deactivate(len(ramp_cmds))
            got += [decode(out.recv(zmq.NOBLOCK), (Command,)) for _ in ramp_cmds]
    finally:
        loop.close()
        out.close(0)
        for sock in feeds.values():
            sock.close(0)
        ctx.term()
    if len(unfed) and unfed[len(loop_cmds) - 1]:
        unfed[len(loop_cmds) :] = True
    result = _compare(loop_cmds + ramp_cmds, got, len(ramp_cmds), table, unfed)
    result.unrecorded_states = len(missing)
    return result


_TICK_FIELDS = ("t_ns", "state_seq", "latent_seq", "chunk_seq", "flags")


def _compare(
    want: list[Command],
    got: list[Command],
    ramp: int,
    table: TickTable,
    unfed_state: np.ndarray | None = None,
) -> ReplayResult:
    qw = np.array([c.q for c in want])
    qg = np.array([c.q for c in got])
    dw = np.array([c.dq for c in want])
    dg = np.array([c.dq for c in got])
    modes = [a.mode != b.mode or a.tick != b.tick for a, b in zip(want, got, strict=True)]
    # with recorded tick data the replayed loop must also have taken the same inputs
    # (except state_seq while the newest state taken is one the recorder missed)
    check = table.source == "recorded"
    if unfed_state is None:
        unfed_state = np.zeros(len(want), bool)
    fields = [
        check
        and any(
            getattr(a, f) != getattr(b, f) for f in _TICK_FIELDS if not (u and f == "state_seq")
        )
        for a, b, u in zip(want, got, unfed_state, strict=True)
    ]
    differ = np.flatnonzero(
        np.any(qw != qg, axis=1)
        | np.any(dw != dg, axis=1)
        | np.array(modes, bool)
        | np.array(fields, bool)
    )
    return ReplayResult(
        ticks=len(want) - ramp,
        ramp=ramp,
        exact_inputs=table.exact,
        q_max_abs=float(np.abs(qw - qg).max()),
        dq_max_abs=float(np.abs(dw - dg).max()),
        mode_mismatches=int(sum(modes)),
        first_mismatch_tick=int(want[differ[0]].tick) if len(differ) else None,
        bit_identical=len(differ) == 0,
        replayed_q=qg,
        inputs=table.source,
        tick_field_mismatches=int(sum(fields)),
    )
