"""Hostile inputs per bus topic, in named classes, for fuzzing the receivers (decode, then apply).

`hostile(topic)` draws a `Case`: its class (the row of the fuzz table), and either raw bytes or
a message that the receiver's rig stamps with its own clock (`Case.build(now)`), so a valid
chunk or latent is valid *now* and reaches the code that applies it. Shapes and limits are the
GR-1 config's, as every receiver pins them (`dualsys.bus.limits`).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

import msgpack
import numpy as np
from hypothesis import strategies as st

from dualsys import SCHEMA_VERSION, config
from dualsys.bus.codec import ND_EXT, encode
from dualsys.bus.codec import _default as codec_default
from dualsys.bus.limits import topic_limits
from dualsys.bus.messages import (
    ActionChunk,
    CameraFrame,
    Command,
    Instruction,
    Latent,
    Message,
    RobotState,
)
from tests.reliability.fuzz_cases import SAMPLES, envelopes

CFG = config.load_robot("gr1")
LIM = CFG.limits()
N, H = CFG.n_joints, CFG.policy.chunk_horizon
CTRL = CFG.controlled_indices
NC, D = len(CTRL), CFG.system2.latent_dim
CAM = CFG.cameras[0]
DT_NS = 1_000_000_000 // CFG.rates.action_hz
LIMITS = topic_limits(CFG)
#: integers that overflow or underflow a receiver's int64 arrays and clocks
BAD_INTS = [-1, -(2**63), 2**63, 2**64 - 1]
CLASSES = (
    "valid",
    "extreme_values",
    "int_out_of_range",
    "header_out_of_range",
    "nonfinite",
    "wrong_shape",
    "wrong_dtype",
    "wrong_type",
    "expansion",
    "oversized",
    "mutated",
    "garbage",
    "envelope",
)


@dataclass
class Case:
    """One hostile input for `topic`: raw bytes, or a message stamped when sent."""

    klass: str
    topic: str
    raw: bytes | None = None
    msg: Message | None = None
    age_ns: int = 0  # the header's t_mono_ns is now - age_ns
    t0_offset_ns: int | None = None  # ActionChunk.t0_mono_ns = now + offset

    def build(self, now: int, seq: int) -> bytes:
        """The bytes to send at monotonic time `now` (ns) with header sequence number seq."""
        if self.raw is not None:
            return self.raw
        msg = self.msg
        if self.t0_offset_ns is not None:
            msg = dataclasses.replace(msg, t0_mono_ns=max(0, now + self.t0_offset_ns))
        return encode(msg, seq, "fuzz", max(0, now - self.age_ns))

    def __repr__(self) -> str:
        what = f"{len(self.raw)} raw bytes {self.raw[:60]!r}" if self.raw is not None else self.msg
        return f"Case({self.klass}, {self.topic}, {what!r:.300}, age {self.age_ns})"


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _base(topic: str, rng: np.random.Generator, ident: int) -> Message:
    """A valid message of the topic (positions inside the joint limits)."""
    span = LIM["max"] - LIM["min"]
    q = LIM["min"] + span * rng.uniform(0.2, 0.8, N)
    if topic == "latent":
        vec = rng.standard_normal(D).astype(np.float32)
        return Latent(vector=vec, instruction_id=ident, instruction="wave", step=ident)
    if topic == "chunk":
        base = q[CTRL] + rng.uniform(-0.02, 0.02, (H, NC))
        acts = np.clip(base, LIM["min"][CTRL], LIM["max"][CTRL]).astype(np.float32)
        return ActionChunk(actions=acts, dt_ns=DT_NS, chunk_id=ident, frozen=int(rng.integers(H)))
    if topic == "state":
        return RobotState(q=q, dq=rng.uniform(-0.1, 0.1, N), tau=np.zeros(N), sim_time=1.0)
    if topic == "command":
        mode = ("run", "run", "hold", "damp")[int(rng.integers(4))]
        return Command(q=q, dq=np.zeros(N), mode=mode, tick=ident)
    if topic == "camera":
        img = rng.integers(0, 256, (CAM.height, CAM.width, 3), dtype=np.uint8)
        name = CAM.name if rng.integers(4) else "other"
        return CameraFrame(camera=name, image=img, sim_time=1.0)
    if topic == "instruction":
        texts = ["wave with the right hand", "touch the red cup", "", " ", "a\x00b", "x" * 600]
        return Instruction(text=texts[int(rng.integers(len(texts)))], id=ident)
    raise ValueError(topic)


def _arrays(msg: Message) -> list[str]:
    return [n for n, s in msg.FIELDS.items() if s.kind == "array"]


def _ints(msg: Message) -> list[str]:
    return [n for n, s in msg.FIELDS.items() if s.kind == "int"]


def _envelope(msg: Message, seq: int, mono: int, wall: int) -> bytes:
    parts = [msg.TYPE, SCHEMA_VERSION, seq, mono, wall, "fuzz", msg.body()]
    return msgpack.packb(parts, default=codec_default, use_bin_type=True)


def _ext(dt: str, shape: tuple[int, ...], payload: bytes) -> msgpack.ExtType:
    head = struct.pack(f"<B{len(dt)}sB{len(shape)}I", len(dt), dt.encode(), len(shape), *shape)
    return msgpack.ExtType(ND_EXT, head + payload)


def _expansion(draw: st.DrawFn, msg: Message) -> bytes:
    """A small message whose headers claim a large allocation, or that nests deeply."""
    field = draw(st.sampled_from(_arrays(msg) or list(msg.FIELDS)))
    head = msgpack.packb([msg.TYPE, SCHEMA_VERSION, 1, 1, 1, "fuzz"], use_bin_type=True)[1:]
    kind = draw(st.sampled_from(["array", "map", "str", "bin", "ext", "nest", "ndim", "shape"]))
    claims = {
        "array": b"\xdd\xff\xff\xff\xff",
        "map": b"\xdf\xff\xff\xff\xff",
        "str": b"\xdb\xff\xff\xff\xff",
        "bin": b"\xc6\xff\xff\xff\xff",
        "ext": b"\xc9\xff\xff\xff\xff\x01",
    }
    if kind in claims:
        return b"\x97" + head + b"\x81" + msgpack.packb(field) + claims[kind] + b"\x00" * 16
    if kind == "nest":
        depth = draw(st.integers(4, 2000))
        return b"\x97" + head + b"\x81" + msgpack.packb(field) + b"\x91" * depth + b"\xc0"
    body = msg.body()
    if kind == "ndim":
        body[field] = _ext("<f4", (1,) * draw(st.integers(5, 255)), b"\x00" * 4)
    else:  # a shape whose element count overflows int64 with a few bytes of data
        body[field] = _ext("<f4", (2**32 - 1,) * 3, b"\x00" * 8)
    return msgpack.packb(
        [msg.TYPE, SCHEMA_VERSION, 1, 1, 1, "fuzz", body], default=codec_default, use_bin_type=True
    )


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.sampled_from([0x00, 0x7F, 0xC1, 0xCF, 0xD3, 0xDD, 0xFF]))
        elif op == "cut":
            buf = buf[:pos]
        else:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=9))
    return bytes(buf)


@st.composite
def hostile(draw: st.DrawFn, topic: str) -> Case:
    """One hostile (or, for the "valid" class, valid) input for a receiver of `topic`."""
    klass = draw(st.sampled_from(CLASSES))
    rng = _rng(draw)
    msg = _base(topic, rng, draw(st.sampled_from([0, 1, 2, 2**40, 2**63 - 1])))
    rel = 0 if topic == "chunk" else None  # a chunk starts now unless the case says otherwise
    case = Case(klass, topic, msg=msg, t0_offset_ns=rel)
    if klass == "valid":
        return case
    if klass == "extreme_values":
        for name in _arrays(msg):
            a = getattr(msg, name)
            if a.dtype.kind == "f":
                scale = draw(st.sampled_from([1e3, 1e30, 3e38, -3e38, 1e-40]))
                setattr(msg, name, (a * 0 + scale).astype(a.dtype))
        case.age_ns = draw(st.sampled_from([0, 10**6, 10**9, 10**12, -(10**9), -(10**15)]))
        if topic == "chunk":
            msg.dt_ns = draw(st.sampled_from([1, 2, DT_NS, 10**9]))
            case.t0_offset_ns = draw(st.sampled_from([-(10**12), -(10**9), 10**9, 10**12]))
        return case
    if klass == "int_out_of_range":
        names = _ints(msg)
        if not names:
            klass = case.klass = "header_out_of_range"
        else:
            name = draw(st.sampled_from(names))
            bad = draw(st.sampled_from(BAD_INTS + ([0] if name == "dt_ns" else [])))
            setattr(msg, name, bad)
            if topic == "chunk" and name == "t0_mono_ns":
                case.t0_offset_ns = None
            return case
    if klass == "header_out_of_range":
        nums = [1, 1, 1]
        nums[draw(st.integers(0, 2))] = draw(st.sampled_from(BAD_INTS))
        return Case(klass, topic, raw=_envelope(msg, *nums))
    if klass == "nonfinite":
        arr = [n for n in _arrays(msg) if getattr(msg, n).dtype.kind == "f"]
        if arr:
            a = getattr(msg, draw(st.sampled_from(arr)))
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        elif topic == "camera":
            msg.sim_time = float("nan")
        return case
    if klass == "wrong_shape":
        names = _arrays(msg)
        if names:
            name = draw(st.sampled_from(names))
            a = getattr(msg, name)
            shape = list(a.shape)
            shape[draw(st.integers(0, a.ndim - 1))] += draw(st.sampled_from([-1, 1, 7]))
            if draw(st.booleans()):
                shape = [0] * a.ndim
            setattr(msg, name, np.zeros([max(s, 0) for s in shape], a.dtype))
        return case
    if klass == "wrong_dtype":
        names = _arrays(msg)
        if names:
            name = draw(st.sampled_from(names))
            dt = draw(st.sampled_from(["<i8", "|u1", "<f2", "<f8", "|b1", "<u8"]))
            setattr(msg, name, getattr(msg, name).astype(dt))
        return case
    if klass == "wrong_type":
        case.msg = draw(st.sampled_from([m for m in SAMPLES if m.TYPE != msg.TYPE]))
        case.t0_offset_ns = None
        return case
    if klass == "expansion":
        return Case(klass, topic, raw=_expansion(draw, msg))
    if klass == "oversized":
        size = LIMITS[topic].max_bytes + draw(st.sampled_from([1, 100, 10_000]))
        return Case(klass, topic, raw=_envelope(msg, 1, 1, 1)[:8] + b"\x00" * size)
    if klass == "mutated":
        return Case(klass, topic, raw=_mutate(draw, case.build(10**15, 1)))
    if klass == "garbage":
        return Case(klass, topic, raw=draw(st.binary(max_size=512)))
    return Case(klass, topic, raw=draw(envelopes()))
