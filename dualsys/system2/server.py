"""One System 2 for a fleet: a ZeroMQ ROUTER serving many robots, encoders batched.

Each robot's link (dualsys/system2/link.py) connects one DEALER. With CURVE on, the robot is
the key that ZeroMQ authenticated (the ZAP User-Id of each message), never a name the peer
claims: its slot, its inputs and its latents belong to that key, and latents go back only to
the connection that key last spoke on. The robot's name in reports is its key file's name
(`authorized_dir/robot/NAME.key`, or "robot" for keys_dir/robot.key).

Per robot the server keeps only the newest state, frame and instruction (latest wins). Each
step (at `rates.system2_target_hz`) it runs the encoder once, batched, over every robot whose
frame and state are fresh (arrived within `budgets.latent_stale_ms`), and sends each its own
latent with the clock-exchange times (dualsys/bus/remote.py). Fairness: ZeroMQ's ROUTER
fair-queues between connections, and a robot may have at most `PER_ROBOT_READS` messages read
per step (more are discarded undecoded and counted as `flood`), so a flooding robot costs
little and cannot starve the others. A robot silent for `idle_s` loses its slot. Every bad
message is dropped and counted per robot and reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus import CameraFrame, Hello, Instruction, RobotState
from dualsys.bus.clock import mono_ns
from dualsys.bus.codec import DropError, decode, encode
from dualsys.bus.keyfiles import PUBLIC_SUFFIX, authorized_keys, load_cert
from dualsys.bus.limits import topic_limits, topic_shapes
from dualsys.bus.remote import LINK_INPUTS, RemoteLatent, widest
from dualsys.config import RobotConfig
from dualsys.system2.encoders.base import Encoder
from dualsys.system2.instruction import InstructionError, validate_instruction
from dualsys.timing import Histogram

ROLE = "system2_server"
LINK = "fleet"
#: messages of one robot read per step: frames (camera rate), states (2x System 2's rate),
#: Hello and instruction resends fit easily; more is a flood
PER_ROBOT_READS = 16
DEFAULT_MAX_ROBOTS = 16
DEFAULT_IDLE_S = 3.0


@dataclass
class Slot:
    """One robot's newest inputs and its bookkeeping (server clock)."""

    key: str
    name: str
    rid: bytes = b""
    hello: bool = False
    frame: CameraFrame | None = None
    state: RobotState | None = None
    frame_t2: int = 0
    state_t2: int = 0
    echo: tuple[int, int] = (0, 0)  # (t1, t2) of the newest input
    instruction: str = ""
    instruction_id: int = 0
    last_rx: int = 0
    reads: int = 0
    fresh: bool = False  # a new frame or state since the last latent
    latents: int = 0
    first_latent: int = 0
    last_latent: int = 0
    dropped: Counter = field(default_factory=Counter)
    age_us: Histogram = field(default_factory=Histogram)

    def summary(self) -> dict[str, object]:
        span = max(self.last_latent - self.first_latent, 1)
        return {
            "name": self.name,
            "latents": self.latents,
            "rate_hz": (self.latents - 1) * 1e9 / span if self.latents > 1 else 0.0,
            "input_age_ms": self.age_us.summary(1000.0),
            "dropped": dict(self.dropped),
            "instruction": self.instruction,
        }


def robot_names(cfg: RobotConfig) -> dict[str, str]:
    """Z85 public key -> robot name of every robot key the server admits (CURVE on)."""
    sec = cfg.security
    if not sec.curve:
        return {}
    keys_dir = Path(sec.keys_dir)
    if sec.authorized_dir:
        authorized_keys(keys_dir, sec.authorized_dir, "robot")  # ownership and mode checks
        files = sorted((keys_dir / sec.authorized_dir / "robot").glob(f"*{PUBLIC_SUFFIX}"))
    else:
        files = [keys_dir / f"robot{PUBLIC_SUFFIX}"]
    return {load_cert(p, secret=False)[0].decode("ascii"): p.stem for p in files}


class FleetServer:
    """The fleet server's state and step. `open(endpoint, curve)`, `run(stop)`, `close()`."""

    def __init__(
        self,
        cfg: RobotConfig,
        encoder: Encoder,
        ctx: zmq.Context,
        *,
        max_robots: int = DEFAULT_MAX_ROBOTS,
        idle_s: float = DEFAULT_IDLE_S,
    ) -> None:
        self.cfg, self.encoder, self.ctx = cfg, encoder, ctx
        self.max_robots, self.idle_ns = max_robots, int(idle_s * 1e9)
        self.period_ns = int(1e9 / cfg.rates.system2_target_hz)
        self.stale_ns = int(cfg.budgets.latent_stale_ms * 1e6)
        self.camera = cfg.cameras[0].name
        self.slots: dict[str, Slot] = {}
        self.names: dict[str, str] = {}
        self.refused: Counter[str] = Counter()  # messages no slot could take, by reason
        self.evicted: dict[str, int] = {}
        self.gone: dict[str, dict] = {}  # summaries of robots whose slot was freed
        self.step_us, self.batch = Histogram(), Histogram()
        self.steps = self.overruns = 0
        self.first_step_ns = self.last_step_ns = 0  # steps that served at least one robot
        self.seq = 0
        self.shapes = {}
        for topic in ("state", "camera"):
            self.shapes.update(topic_shapes(cfg)[topic])
        lim = topic_limits(cfg)
        self.limits = widest(lim["state"], lim["camera"], lim["instruction"], lim["stats"])
        self.hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, cfg.n_joints, os.getpid())

    def open(self, endpoint: str, curve) -> None:
        """Bind the ROUTER (CURVE server when `curve` is given)."""
        self.curve = curve is not None
        self.names = robot_names(self.cfg) if self.curve else {}
        s = self.sock = self.ctx.socket(zmq.ROUTER)
        for opt, val in (
            (zmq.LINGER, 0),
            (zmq.ROUTER_MANDATORY, 1),  # an unroutable latent raises (counted), not vanishes
            (zmq.SNDHWM, 4),
            (zmq.RCVHWM, 64),
            (zmq.MAXMSGSIZE, self.limits.max_bytes),
            (zmq.HEARTBEAT_IVL, 500),
            (zmq.HEARTBEAT_TIMEOUT, 2000),
        ):
            s.setsockopt(opt, val)
        if curve is not None:
            curve.apply(s, bind=True)
        s.bind(endpoint)

    def close(self) -> None:
        """Close the ROUTER."""
        self.sock.close(0)

    # ------------------------------------------------------------------ receive
    def _slot(self, key: str, rid: bytes, now: int) -> Slot | None:
        slot = self.slots.get(key)
        if slot is None:
            if len(self.slots) >= self.max_robots:
                self.refused["full"] += 1
                return None
            name = self.names.get(key, key[:12] if self.curve else f"peer-{rid.hex()[:8]}")
            slot = self.slots[key] = Slot(key, name)
            print(f"system2 server: robot {name!r} connected", flush=True)
        slot.rid, slot.last_rx = rid, now
        return slot

    def drain(self, budget: int) -> int:
        """Read at most `budget` waiting messages (never blocks). Returns how many were read."""
        n = 0
        while n < budget:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += 1
            now = mono_ns()
            if len(frames) != 2:
                self.refused["malformed"] += 1
                continue
            rid, data = frames[0].bytes, frames[1]
            if not rid.startswith(b"\x00"):
                # a routing id the peer chose (libzmq's own ids start with a zero byte and are
                # never reused on this socket): a peer could take over another robot's name
                # the moment its connection drops, and be sent that robot's latents
                self.refused["chosen_routing_id"] += 1
                continue
            key = data.get("User-Id") if self.curve else rid.hex()
            if not key:
                self.refused["no_identity"] += 1
                continue
            slot = self._slot(key, rid, now)
            if slot is None:
                continue
            slot.reads += 1
            if slot.reads > PER_ROBOT_READS:
                slot.dropped["flood"] += 1
                continue
            try:
                msg = decode(data.buffer, LINK_INPUTS, self.shapes, limits=self.limits)
            except DropError as exc:
                slot.dropped[exc.reason] += 1
                continue
            self._take(slot, msg, now)
        return n

    def _take(self, slot: Slot, msg, now: int) -> None:
        if isinstance(msg, Hello):
            cfg = self.cfg
            if msg.latent_dim != cfg.system2.latent_dim or msg.n_joints != cfg.n_joints:
                slot.dropped["hello_mismatch"] += 1
                slot.hello = False
            else:
                slot.hello = True
            self._send(slot, self.hello)
            return
        if not slot.hello:
            slot.dropped["no_hello"] += 1
            return
        t1 = msg.header.t_mono_ns
        if isinstance(msg, Instruction):
            try:
                text = validate_instruction(msg.text, self.cfg.system2.max_instruction_chars)
            except InstructionError as exc:
                slot.dropped[f"instruction_{exc.reason}"] += 1
                return
            if (msg.id, text) != (slot.instruction_id, slot.instruction):
                slot.instruction, slot.instruction_id = text, msg.id
                print(f"system2 server: {slot.name} instruction #{msg.id}: {text!r}", flush=True)
            return
        if isinstance(msg, CameraFrame):
            if msg.camera != self.camera:
                slot.dropped["unknown_camera"] += 1
                return
            slot.frame, slot.frame_t2 = msg, now
        else:
            slot.state, slot.state_t2 = msg, now
        slot.echo, slot.fresh = (t1, now), True

    def evict_idle(self, now: int) -> None:
        """Free the slot of every robot silent for idle_s."""
        for key in [k for k, s in self.slots.items() if now - s.last_rx > self.idle_ns]:
            slot = self.slots.pop(key)
            self.evicted[slot.name] = self.evicted.get(slot.name, 0) + 1
            self.gone[slot.name] = slot.summary()
            print(f"system2 server: robot {slot.name!r} silent: slot freed", flush=True)

    # ------------------------------------------------------------------ step
    def ready(self, now: int) -> list[Slot]:
        """Robots with a fresh frame and state (each within latent_stale_ms) and something new."""
        out = []
        for s in self.slots.values():
            if s.frame is None or s.state is None or not s.fresh:
                continue
            if now - min(s.frame_t2, s.state_t2) > self.stale_ns:
                continue
            out.append(s)
        return out

    def step(self) -> int:
        """Encode every ready robot in one batch and send each its latent; returns the batch."""
        now = mono_ns()
        batch = self.ready(now)
        for s in self.slots.values():
            s.reads = 0
        if not batch:
            return 0
        default = self.cfg.system2.default_instruction
        res = self.encoder.encode_batch(
            [s.frame.image for s in batch],
            [s.state.q for s in batch],
            [s.state.dq for s in batch],
            [s.instruction or default for s in batch],
        )
        self.steps += 1
        self.first_step_ns = self.first_step_ns or now
        self.last_step_ns = now
        self.step_us.record((mono_ns() - now) // 1000)
        self.batch.record(len(batch))
        for s, vec in zip(batch, res.vectors, strict=True):
            t3 = mono_ns()
            msg = RemoteLatent(
                vector=np.ascontiguousarray(vec, dtype=np.float32),
                instruction_id=s.instruction_id,
                instruction=s.instruction or default,
                step=s.latents + 1,
                frame_t1_ns=s.frame.header.t_mono_ns,
                state_t1_ns=s.state.header.t_mono_ns,
                echo_t1_ns=s.echo[0],
                echo_t2_ns=s.echo[1],
                t3_ns=t3,
            )
            if self._send(s, msg):
                s.latents += 1
                s.first_latent = s.first_latent or t3
                s.last_latent = t3
                s.age_us.record(max(0, t3 - min(s.frame_t2, s.state_t2)) // 1000)
            s.fresh = False
        return len(batch)

    def _send(self, slot: Slot, msg) -> bool:
        self.seq += 1
        data = encode(msg, self.seq, ROLE, t_mono_ns=max(0, mono_ns()))
        try:
            self.sock.send_multipart([slot.rid, data], zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):  # queue full or peer gone (ROUTER_MANDATORY)
            slot.dropped["send_" + type(msg).__name__.lower()] += 1
            return False
        return True

    def run(self, stop: threading.Event, duration_s: float = 0.0, on_tick=None) -> None:
        """Serve until `stop` or `duration_s` (> 0): read until each step's deadline, then
        step. A late step restarts the schedule from now (never a burst)."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        budget = self.max_robots * PER_ROBOT_READS * 2
        end = time.monotonic() + duration_s if duration_s > 0 else float("inf")
        next_t = time.monotonic_ns()
        while not stop.is_set() and time.monotonic() < end:
            while (left := next_t - time.monotonic_ns()) > 0:
                if poller.poll(max(1, min(left // 1_000_000, 20))):
                    self.drain(budget)
            self.drain(budget)
            self.evict_idle(mono_ns())
            self.step()
            if on_tick is not None:
                on_tick()
            next_t += self.period_ns
            if next_t < time.monotonic_ns():
                self.overruns += 1
                next_t = time.monotonic_ns()

    def summary(self) -> dict[str, object]:
        """Contents of {run_dir}/server.json: per robot, the batch and step timings."""
        robots = {s.name: s.summary() for s in self.slots.values()}
        for name, gone in self.gone.items():
            robots.setdefault(name, gone)
        return {
            "role": ROLE,
            "robot_config": self.cfg.name,
            "target_hz": self.cfg.rates.system2_target_hz,
            "steps": self.steps,
            # the rate of steps that served robots: each robot's own rate is judged against it
            "active_rate_hz": (self.steps - 1) * 1e9 / (self.last_step_ns - self.first_step_ns)
            if self.steps > 1 and self.last_step_ns > self.first_step_ns
            else 0.0,
            "overruns": self.overruns,
            "step_ms": self.step_us.summary(1000.0),
            "batch": self.batch.summary(),
            "robots": robots,
            "refused": dict(self.refused),
            "evicted": self.evicted,
            "encoder": self.encoder.description,
        }

    def stats_values(self) -> dict[str, float]:
        """Flat per-robot numbers for a status line or a Stats message."""
        out = {"robots": float(len(self.slots)), "steps": float(self.steps)}
        for s in self.slots.values():
            span = max(s.last_latent - s.first_latent, 1)
            out[f"{s.name}.rate_hz"] = (s.latents - 1) * 1e9 / span if s.latents > 1 else 0.0
            out[f"{s.name}.latents"] = float(s.latents)
            out[f"{s.name}.age_p99_ms"] = s.age_us.pct(99) / 1000 if s.age_us.count else -1.0
            out[f"{s.name}.dropped"] = float(sum(s.dropped.values()))
        return out
