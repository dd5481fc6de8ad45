"""The real receivers, driven one hostile input at a time: decode, then apply.

Each rig builds the real component (ControlLoop, PolicyLoop with the shipped policy,
System2Service, the robot side's command Subscriber + RobotSafety) on the GR-1 config with
inproc:// endpoints (real ZeroMQ sockets in one process: delivery is immediate, so each case is
applied on the next step). `feed(case)` sends the case's bytes on its topic, runs the
receiver's step(s), checks what came out and returns the outcome: "accepted", or
"dropped:<reason>" / "refused:<reason>" as the receiver counted it, or "not_delivered" (it never
reached the receiver: ZeroMQ's MAXMSGSIZE drops an oversized message on a bound socket).
A property violation raises AssertionError; any other exception is a finding too.

Properties:
- control: every command sent is finite, inside the position limits and moves each joint by
  at most its velocity limit per tick (the first tick after a measured state excepted: it holds
  the measured pose);
- policy: every chunk it publishes decodes under the chunk topic's receive spec;
- System 2: the frame and state it keeps have the pinned shapes and are finite; the instruction
  it keeps is valid text of at most max_instruction_chars;
- robot: the safety filter's targets are finite and inside the position limits, and a refused
  command is never followed.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus.limits import receive_spec
from dualsys.bus.messages import ActionChunk, Command, Latent, RobotState
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.config import ENDPOINT_NAMES
from dualsys.system2.instruction import validate_instruction
from tests.reliability.fuzz_hostile import CFG, LIM, Case

P = CFG.rates.control_period_ns
TICKS_PER_CASE = 3
#: a fresh latent sent with each valid chunk, so the control loop follows it
_LATENT = Latent(vector=np.zeros(CFG.system2.latent_dim, np.float32), instruction="wave")


def inproc_config(tag: str):
    """The GR-1 config with every link on inproc:// (unique per rig)."""
    eps = {name: f"inproc://{tag}-{name}" for name in ENDPOINT_NAMES}
    return dataclasses.replace(CFG, endpoints=eps)


def _delta(sub: Subscriber, before: Counter) -> str | None:
    for reason, n in sub.dropped.items():
        if n > before.get(reason, 0):
            return f"dropped:{reason}"
    return None


class ControlRig:
    """A configured ControlLoop fed latents and chunks; ticks on a virtual clock."""

    topics = ("latent", "chunk")

    def __init__(self, ctx: zmq.Context, run_dir: Path) -> None:
        from dualsys.system1.control import ControlLoop

        self.cfg = cfg = inproc_config(f"control-{id(self)}")
        # publishers bind first: the loop's subscribers then connect to them (as in a run)
        self.pubs = {t: Publisher(ctx, cfg.endpoint(t, run_dir), "fuzz") for t in self.topics}
        self.state = Publisher(ctx, cfg.endpoint("state", run_dir), "robot")
        self.loop = ControlLoop(cfg, ctx, run_dir)
        self.loop.configure()
        self.cmds = Subscriber(
            ctx, cfg.endpoint("command", run_dir), (Command,), latest=False, hwm=100_000,
            **receive_spec(cfg, "command"),
        )  # fmt: skip
        time.sleep(0.05)
        self.loop.warm(20)
        self.now = time.monotonic_ns()
        self.loop.activate(self.now)
        self.seq = 0
        q0 = (LIM["min"] + LIM["max"]) / 2
        self.state.send(RobotState(q=q0, dq=q0 * 0, tau=q0 * 0))
        self._tick()
        assert self.loop.have_state, "the rig's state did not arrive"
        self.prev_q = None
        while self.cmds.recv_nowait() is not None:
            pass

    def _tick(self) -> None:
        self.loop.update(self.now)
        self.now += P

    def feed(self, case: Case) -> str:
        """Send the case on its topic, run TICKS_PER_CASE ticks, check every command."""
        self.seq += 1
        sub = self.loop.latent_sub if case.topic == "latent" else self.loop.chunk_sub
        before, got = Counter(sub.dropped), sub.received
        self.pubs[case.topic].send_raw(case.build(self.now, self.seq))
        if case.topic == "chunk" and case.klass == "valid":  # a fresh latent lets it run
            self.pubs["latent"].send(_LATENT, t_mono_ns=self.now)
        for _ in range(TICKS_PER_CASE):
            self._tick()
            self._check_commands()
        if sub.received > got:
            return "accepted"
        return _delta(sub, before) or "not_delivered"

    def _check_commands(self) -> None:
        vmax = LIM["velocity"] * P / 1e9 * (1 + 1e-6) + 1e-12
        for _ in range(8):
            cmd = self.cmds.recv_nowait()
            if cmd is None:
                break
            q = cmd.q
            assert np.isfinite(q).all() and np.isfinite(cmd.dq).all(), "non-finite command"
            assert (q >= LIM["min"] - 1e-9).all() and (q <= LIM["max"] + 1e-9).all(), "limits"
            if self.prev_q is not None:
                step = np.abs(q - self.prev_q)
                assert (step <= vmax).all(), f"jump {float((step - vmax).max())} rad over vmax"
            self.prev_q = q

    def close(self) -> None:
        for p in (*self.pubs.values(), self.state, self.cmds):
            p.close()
        self.loop.close()


class PolicyRig:
    """A PolicyLoop with the shipped policy, fed states and latents; publishes real chunks."""

    topics = ("state", "latent")

    def __init__(self, ctx: zmq.Context, run_dir: Path) -> None:
        from dualsys.system1 import policy
        from dualsys.system1.policy_proc import PolicyLoop

        self.cfg = cfg = inproc_config(f"policy-{id(self)}")
        sampler, info = policy.build(cfg, untrained=False)
        self.pubs = {t: Publisher(ctx, cfg.endpoint(t, run_dir), "fuzz") for t in self.topics}
        self.loop = PolicyLoop(cfg, ctx, run_dir, sampler, info)
        self.chunks = Subscriber(
            ctx, cfg.endpoint("chunk", run_dir), (ActionChunk,), latest=False, hwm=100_000,
            **receive_spec(cfg, "chunk"),
        )  # fmt: skip
        time.sleep(0.05)
        self.seq = 0

    def feed(self, case: Case) -> str:
        """Send the case, poll the inputs, step once; every chunk published must decode."""
        self.seq += 1
        sub = self.loop.state_sub if case.topic == "state" else self.loop.latent_sub
        before, got = Counter(sub.dropped), sub.received
        self.pubs[case.topic].send_raw(case.build(time.monotonic_ns(), self.seq))
        self.loop.poll_inputs(timeout_ms=0)
        published = self.loop.step()
        if published:
            msg = self.chunks.recv(timeout_ms=1000)
            assert msg is not None, f"published chunk refused: {self.chunks.last_error}"
            assert np.isfinite(msg.actions).all()
        if sub.received > got:
            return "accepted"
        return _delta(sub, before) or "not_delivered"

    def close(self) -> None:
        for p in (*self.pubs.values(), self.chunks):
            p.close()
        self.loop.close()


class System2Rig:
    """A System2Service's receive side (frames, states, instructions); no encoding step."""

    topics = ("camera", "state", "instruction")

    def __init__(self, ctx: zmq.Context, run_dir: Path) -> None:
        from dualsys.system2.service import System2Service

        self.cfg = cfg = inproc_config(f"system2-{id(self)}")
        # the encoder is never called here: the properties are about what the service keeps
        self.svc = System2Service(cfg, run_dir, encoder=None, ctx=ctx)
        self.pubs = {
            "camera": Publisher(ctx, cfg.endpoint("camera", run_dir), "robot"),
            "state": Publisher(ctx, cfg.endpoint("state", run_dir), "robot"),
        }
        self.svc.open()
        ep = cfg.endpoint("instruction", run_dir)
        self.pubs["instruction"] = Publisher(ctx, ep, "say", bind=False)
        time.sleep(0.05)
        self.seq = 0

    def feed(self, case: Case) -> str:
        """Send the case, run the service's input step and instruction poll, check its state."""
        svc = self.svc
        self.seq += 1
        sub = {"camera": svc.frames, "state": svc.states, "instruction": svc.instructions}[
            case.topic
        ]
        # a flood case leaves more than one poll's worth waiting: read it all first, so this
        # case's message is the one the poll below reads
        while svc.take_instructions():
            pass
        before, got = Counter(sub.dropped), sub.received
        refused, other = Counter(svc.refused), Counter(svc.other)
        self.pubs[case.topic].send_raw(case.build(time.monotonic_ns(), self.seq))
        if case.topic == "instruction":
            time.sleep(0)  # inproc delivery is immediate; the poll reads it
            svc.take_instructions()
        else:
            svc._take_inputs()
        cam = svc.camera
        if svc._frame is not None:
            assert svc._frame.image.shape == (cam.height, cam.width, 3)
            assert svc._frame.image.dtype == np.uint8 and svc._frame.camera == cam.name
        if svc._state is not None:
            assert svc._state.q.shape == (CFG.n_joints,) and np.isfinite(svc._state.q).all()
        assert validate_instruction(svc.instruction, CFG.system2.max_instruction_chars)
        for reason, n in svc.refused.items():
            if n > refused.get(reason, 0):
                return f"refused:{reason}"
        for reason, n in svc.other.items():
            if n > other.get(reason, 0):
                return f"refused:{reason}"
        if sub.received > got:
            return "accepted"
        return _delta(sub, before) or "not_delivered"

    def close(self) -> None:
        for p in self.pubs.values():
            p.close()
        self.svc.close()


class RobotRig:
    """The robot side's command path: its Subscriber (as dualsys/robot/process.py builds it),
    then RobotSafety.offer and update on a 200 Hz virtual clock, the robot tracking exactly."""

    topics = ("command",)

    def __init__(self, ctx: zmq.Context, run_dir: Path) -> None:
        from dualsys.robot.safety import RobotSafety

        self.cfg = cfg = inproc_config(f"robot-{id(self)}")
        self.pub = Publisher(ctx, cfg.endpoint("command", run_dir), "control")
        self.sub = Subscriber(
            ctx, cfg.endpoint("command", run_dir), (Command,), latest=True,
            **receive_spec(cfg, "command"),
        )  # fmt: skip
        self.safety = RobotSafety(cfg)
        self.t = 0.0
        self.q = LIM["default"].copy()
        self.dq = np.zeros(cfg.n_joints)
        self.safety.reset(self.t, self.q)
        time.sleep(0.05)
        self.seq = 0

    def feed(self, case: Case) -> str:
        """Send the case, take it as the robot loop does, run a few safety ticks."""
        self.seq += 1
        s = self.safety
        before, got, refused = Counter(self.sub.dropped), self.sub.received, Counter(s.refused)
        self.pub.send_raw(case.build(time.monotonic_ns(), self.seq))
        out = None
        for _ in range(TICKS_PER_CASE):
            self.t += P / 1e9
            msg = self.sub.recv_latest()
            if msg is not None:
                s.offer(self.t, msg.q, msg.dq, msg.mode)
            q, dq, _mode = s.update(self.t, self.q, self.dq)
            assert np.isfinite(q).all() and np.isfinite(dq).all(), "non-finite target"
            assert (q >= LIM["min"] - 1e-9).all() and (q <= LIM["max"] + 1e-9).all(), "limits"
            self.q, self.dq = q.copy(), dq.copy()
            out = out or ("accepted" if msg is not None else None)
        for reason, n in s.refused.items():
            if n > refused.get(reason, 0):
                return f"refused:{reason}"
        if self.sub.received > got:
            return out or "accepted"
        return _delta(self.sub, before) or "not_delivered"

    def close(self) -> None:
        self.pub.close()
        self.sub.close()


RIGS = {"control": ControlRig, "policy": PolicyRig, "system2": System2Rig, "robot": RobotRig}
