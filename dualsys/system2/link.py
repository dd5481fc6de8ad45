"""The robot side of a remote System 2: forward inputs to a server, republish its latents.

`dualsys up --robot R --system2 tcp://HOST:PORT` runs this process in place of the local
System 2 (same role name "system2", same restart policy). It subscribes the robot's local
state and camera topics and binds the local instruction link (so `dualsys say` works as
before), forwards them to the server over one ZeroMQ DEALER (CURVE with the robot's key,
`fleet` link of dualsys/bus/roles.py), and republishes each latent it gets back on the local
latent topic. Every robot-computer process keeps its own monotonic clock and ipc links.

Clocks: a latent's header time on the robot is the server's send time translated into the
robot's clock with the measured offset (dualsys/bus/clock.py), never later than the moment it
arrived, so System 1's latent age means the same as with a local System 2.

Losing the server simply stops the latents: System 1 holds, then returns to its default pose,
exactly as with a dead local System 2. ZeroMQ reconnects by itself; the link says Hello and
resends the current instruction every second, so a restarted server picks the robot up again
without restarting anything here.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import zmq

from dualsys.bus import (
    CameraFrame,
    Hello,
    Instruction,
    Latent,
    Publisher,
    RobotState,
    Stats,
    Subscriber,
)
from dualsys.bus.clock import ClockSample, OffsetEstimator, mono_ns
from dualsys.bus.codec import DropError, EncodeError, decode, encode
from dualsys.bus.curve import BusSecurity
from dualsys.bus.latent_link import LatentOut
from dualsys.bus.limits import receive_spec
from dualsys.bus.remote import RemoteLatent, remote_latent_limits
from dualsys.config import RobotConfig
from dualsys.timing import Histogram

ROLE = "system2"  # the supervisor's role for whatever provides latents on this computer
LINK = "fleet"  # the CURVE link name (dualsys/bus/roles.py)
#: how often the link says Hello and resends the instruction to the server (seconds)
RESEND_S = 1.0
#: a clock echo older than this is not a sample (a server replaying old times)
MAX_ECHO_AGE_NS = 10_000_000_000
#: most messages read from each socket per loop turn
MAX_READ = 16
#: the DEALER's queues: a few messages, never a backlog of stale frames
LINK_HWM = 4


def dealer(ctx: zmq.Context, endpoint: str, curve, max_bytes: int) -> zmq.Socket:
    """A DEALER to the server: no queue towards an unconnected peer, heartbeats so a silent
    network cut is noticed, fast reconnect, bounded messages, LINGER 0."""
    sock = ctx.socket(zmq.DEALER)
    for opt, val in (
        (zmq.LINGER, 0),
        (zmq.IMMEDIATE, 1),
        (zmq.SNDHWM, LINK_HWM),
        (zmq.RCVHWM, LINK_HWM),
        (zmq.MAXMSGSIZE, max_bytes),
        (zmq.RECONNECT_IVL, 100),
        (zmq.RECONNECT_IVL_MAX, 1000),
        (zmq.HEARTBEAT_IVL, 500),
        (zmq.HEARTBEAT_TIMEOUT, 2000),
    ):
        sock.setsockopt(opt, val)
    if curve is not None:
        try:
            curve.apply(sock, bind=False)
        except Exception:
            sock.close(0)
            raise
    sock.connect(endpoint)
    return sock


class System2Link:
    """Robot-side link to a System 2 server. `open()`, `run(stop)`, `close()`, `summary()`."""

    def __init__(self, cfg: RobotConfig, run_dir, server: str, ctx: zmq.Context) -> None:
        self.cfg, self.run_dir, self.server, self.ctx = cfg, run_dir, server, ctx
        self.period_ns = int(1e9 / cfg.rates.system2_target_hz)
        self.state_every_ns = self.period_ns // 2  # twice System 2's rate: always fresh
        self.clock = OffsetEstimator()
        self.age_us = Histogram()
        self.rtt_us = Histogram()
        self.dropped: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.latents = 0
        self.instruction: Instruction | None = None
        self.server_hello: Hello | None = None
        self.last_latent_ns = 0
        self.offset_range_s = [float("inf"), float("-inf")]
        self.failed = ""
        self._seq = 0
        self._frame: CameraFrame | None = None
        self._state: RobotState | None = None
        self._state_sent_ns = 0
        self._win = (0, time.monotonic_ns())

    def open(self) -> None:
        """Local subscriptions and publishers (ipc), the DEALER to the server (CURVE)."""
        cfg, run = self.cfg, self.run_dir
        ep = {n: cfg.endpoint(n, run) for n in ("state", "camera", "instruction", "latent")}
        ep["stats"] = cfg.endpoint("stats", run)
        self.sec = sec = BusSecurity(self.ctx, cfg, role="robot")

        def sub(name: str, cls: type, **kw) -> Subscriber:
            curve = sec.curve(ep[name], bind=kw.get("bind", False))
            return Subscriber(
                self.ctx, ep[name], (cls,), curve=curve, **kw, **receive_spec(cfg, name)
            )

        self.states = sub("state", RobotState)
        self.frames = sub("camera", CameraFrame)
        self.instructions = sub("instruction", Instruction, bind=True, latest=False)
        # the local latent link: ZeroMQ, plus the same-machine slot System 1 reads
        self.pub = LatentOut(self.ctx, cfg, run, sec, ROLE)
        self.stats = Publisher(
            self.ctx, ep["stats"], ROLE, bind=False, curve=sec.curve(ep["stats"], bind=False)
        )
        self.limits = remote_latent_limits(
            cfg.system2.latent_dim, cfg.system2.max_instruction_chars
        )
        self.shapes = {RemoteLatent.TYPE: {"vector": (cfg.system2.latent_dim,)}}
        curve = sec.curve(self.server, bind=False, link=LINK)
        self.sock = dealer(self.ctx, self.server, curve, self.limits.max_bytes)
        self.hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, cfg.n_joints, os.getpid())

    def close(self) -> None:
        """Close every socket and stop the CURVE authenticator."""
        for s in (self.states, self.frames, self.instructions, self.pub, self.stats):
            s.close()
        self.sock.close(0)
        self.sec.close()

    # ------------------------------------------------------------------ to the server
    def _forward(self, msg, kind: str) -> None:
        """Send one message to the server stamped now (t1), never blocking."""
        self._seq += 1
        try:
            data = encode(msg, self._seq, self.cfg.name, t_mono_ns=mono_ns())
            self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:  # not connected (IMMEDIATE) or the queue is full: latest wins
            self.dropped[f"{kind}.not_sent"] += 1
            return
        except EncodeError:
            self.dropped[f"{kind}.encode"] += 1
            return
        self.sent[kind] += 1

    def _take_local(self) -> None:
        frame = self.frames.recv_latest()
        if frame is not None:
            self._frame = frame
        state = self.states.recv_latest()
        if state is not None:
            self._state = state
        for _ in range(MAX_READ):
            ins = self.instructions.recv_nowait(1)
            if ins is None:
                break
            self.instruction = ins
            self._forward(ins, "instruction")
        now = time.monotonic_ns()
        if self._frame is not None:
            self._forward(self._frame, "frame")
            self._frame = None
        if self._state is not None and now - self._state_sent_ns >= self.state_every_ns:
            self._forward(self._state, "state")
            self._state, self._state_sent_ns = None, now

    # ------------------------------------------------------------------ from the server
    def _take_remote(self) -> None:
        for _ in range(MAX_READ):
            try:
                data = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(data, (RemoteLatent, Hello), self.shapes, limits=self.limits)
            except DropError as exc:
                self.dropped[f"latent.{exc.reason}"] += 1
                continue
            if isinstance(msg, Hello):
                self._on_server_hello(msg)
            else:
                self.on_latent(msg, mono_ns())

    def _on_server_hello(self, msg: Hello) -> None:
        cfg = self.cfg
        if msg.latent_dim != cfg.system2.latent_dim or msg.n_joints != cfg.n_joints:
            self.dropped["hello.mismatch"] += 1
            if self.dropped["hello.mismatch"] == 1:
                print(
                    f"system2 link: the server at {self.server} serves latent {msg.latent_dim}, "
                    f"{msg.n_joints} joints; this robot needs {cfg.system2.latent_dim}, "
                    f"{cfg.n_joints}: its latents are refused (wrong_shape)",
                    flush=True,
                )
        if self.server_hello is None or self.server_hello.pid != msg.pid:
            print(f"system2 link: server {self.server} (pid {msg.pid}) answered", flush=True)
        self.server_hello = msg

    def on_latent(self, msg: RemoteLatent, t4: int) -> bool:
        """Take one clock sample from the latent, translate its send time into this clock and
        republish it on the local latent topic. Returns False when it was refused."""
        t1, t2, t3 = msg.echo_t1_ns, msg.echo_t2_ns, msg.t3_ns
        if not t4 - MAX_ECHO_AGE_NS <= t1 <= t4 or (t4 - t1) < (t3 - t2):
            self.dropped["latent.bad_clock"] += 1  # an echo we cannot have sent, or rtt < 0
            return False
        sample = ClockSample.of(t1, t2, t3, t4)
        self.clock.add(sample)
        self.rtt_us.record(sample.rtt_ns // 1000)
        off_s = self.clock.offset_ns / 1e9
        self.offset_range_s = [
            min(self.offset_range_s[0], off_s),
            max(self.offset_range_s[1], off_s),
        ]
        t_local = self.clock.to_local(t3, t4)
        if t_local <= 0:
            self.dropped["latent.bad_clock"] += 1
            return False
        self.age_us.record((t4 - t_local) // 1000)
        lat = Latent(
            vector=msg.vector,
            instruction_id=msg.instruction_id,
            instruction=msg.instruction,
            frame_t_mono_ns=msg.frame_t1_ns,
            state_t_mono_ns=msg.state_t1_ns,
            step=msg.step,
        )
        self.pub.send(lat, t_mono_ns=t_local)
        self.latents += 1
        self.last_latent_ns = t4
        return True

    # ------------------------------------------------------------------ loop
    def stats_values(self) -> dict[str, float]:
        """Live numbers for the supervisor (rate over the last window, clock, ages, drops)."""
        n0, t0 = self._win
        now = time.monotonic_ns()
        self._win = (self.latents, now)
        unc = self.clock.uncertainty_ns
        return {
            "rate_hz": (self.latents - n0) * 1e9 / max(now - t0, 1),
            "steps": float(self.latents),
            "link_up": float(now - self.last_latent_ns < 2 * self.period_ns),
            "rtt_ms": self.rtt_us.pct(50) / 1000 if self.rtt_us.count else -1.0,
            "offset_s": (self.clock.offset_ns or 0) / 1e9,
            "offset_unc_ms": unc / 1e6 if unc is not None else -1.0,
            "latent_age_ms": self.age_us.pct(99) / 1000 if self.age_us.count else -1.0,
            "dropped": float(sum(self.dropped.values())),
        }

    def run(self, stop: threading.Event, duration_s: float = 0.0) -> None:
        """Forward and republish until `stop` is set or `duration_s` (> 0) has passed."""
        poller = zmq.Poller()
        for s in (self.sock, self.states.sock, self.frames.sock, self.instructions.sock):
            poller.register(s, zmq.POLLIN)
        end = time.monotonic() + duration_s if duration_s > 0 else float("inf")
        next_resend = next_stats = 0.0
        stats_every = 1.0 / self.cfg.rates.stats_hz
        while not stop.is_set() and time.monotonic() < end:
            poller.poll(20)
            self._take_remote()
            self._take_local()
            now = time.monotonic()
            if now >= next_resend:  # a restarted server learns who we are and what to do
                self._forward(self.hello, "hello")
                if self.instruction is not None:
                    self._forward(self.instruction, "instruction")
                self.stats.send(self.hello)
                next_resend = now + RESEND_S
            if now >= next_stats:
                self.stats.send(Stats(process=ROLE, values=self.stats_values()))
                next_stats = now + stats_every

    def summary(self) -> dict[str, object]:
        """Contents of {run_dir}/link.json (shown as the run report's "link" section)."""
        unc = self.clock.uncertainty_ns
        lo, hi = self.offset_range_s
        return {
            "server": self.server,
            "latents": self.latents,
            "latents_slot_sent": self.pub.slot_sent,
            "sent": dict(self.sent),
            "dropped": dict(self.dropped),
            "clock_samples": self.clock.count,
            "clock_resets": self.clock.resets,
            "offset_s": (self.clock.offset_ns or 0) / 1e9,
            "offset_uncertainty_ms": unc / 1e6 if unc is not None else None,
            "offset_range_s": [lo, hi] if self.clock.count else None,
            "rtt_ms": self.rtt_us.summary(1000.0),
            "latent_age_ms": self.age_us.summary(1000.0),
            "server_pid": self.server_hello.pid if self.server_hello else None,
            "failed": self.failed,
        }
