"""Hostile bytes and messages a rogue local peer can send to a running system's bound sockets.

The sockets a peer can reach are the SUB sockets a dualsys process binds: System 2's
instruction link and the supervisor's stats link (every other link is a PUB the peer could
only read). `raw_classes(cfg)` gives, per hostile class, the frames to send; `expected(cfg,
topic, frame)` decodes a frame exactly as that link's receiver does and names the outcome it
must get (a drop reason of the codec, "zmq_maxmsgsize" for a frame ZeroMQ refuses before it is
read, or "accepted"). `instruction_refusals(cfg)` are well-formed Instructions System 2 must
refuse (NUL, ESC, bidi override, over-long, empty) with the reason it counts them under.
Imports the bus only (no torch, no mujoco).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import msgpack
import numpy as np

from dualsys import SCHEMA_VERSION
from dualsys.bus.codec import DropError, decode, encode
from dualsys.bus.limits import receive_spec
from dualsys.bus.messages import Hello, Instruction, Message, SceneReset, Stats
from dualsys.config import RobotConfig

#: the receivers a rogue local peer can reach: topic -> the message types it accepts
REACHABLE = {"instruction": (Instruction,), "stats": (Hello, Stats)}


@dataclass(frozen=True)
class RawClass:
    """One class of hostile frames: what it is and the frames (sent round-robin)."""

    name: str
    what: str
    frames: dict[str, tuple[bytes, ...]]  # topic (a key of REACHABLE) -> frames


def _envelope(kind: str, body: dict, seq: int = 1, mono: int = 1, version: int = SCHEMA_VERSION):
    return msgpack.packb([kind, version, seq, mono, 1, "rogue", body], use_bin_type=True)


def _wrong_version(msg: Message) -> bytes:
    return msgpack.packb(
        [msg.TYPE, SCHEMA_VERSION + 6, 1, 1, 1, "rogue", msg.body()], use_bin_type=True
    )


def raw_classes(cfg: RobotConfig) -> list[RawClass]:
    """Every class of malformed frames, per reachable topic, in the order a benchmark sends them."""
    instr = encode(Instruction(text="wave with the right hand", id=1), 1, "rogue")
    stats = encode(Stats(process="rogue", values={"x": 1.0}), 1, "rogue")
    big, n = cfg.system2.latent_dim, cfg.n_joints
    rng = np.random.default_rng(17)
    garbage = tuple(rng.bytes(int(k)) for k in rng.integers(1, 300, 16))
    return [
        RawClass(
            "truncated",
            "a valid Instruction / Stats cut after 1, 5, half, all but 1 bytes",
            {
                t: tuple(m[:k] for k in (1, 5, len(m) // 2, len(m) - 1))
                for t, m in (("instruction", instr), ("stats", stats))
            },
        ),
        RawClass(
            "wrong_version",
            f"schema version {SCHEMA_VERSION + 6} instead of {SCHEMA_VERSION}",
            {
                "instruction": (_wrong_version(Instruction(text="x", id=2)),),
                "stats": (
                    _wrong_version(Stats(process="robot", values={"x": 1.0})),
                    _wrong_version(Hello("robot", cfg.name, big, n, 1)),
                ),
            },
        ),
        RawClass(
            "wrong_type",
            "a Stats or SceneReset where an Instruction goes; an Instruction where Stats go",
            {
                "instruction": (
                    encode(Stats(process="x", values={}), 1, "rogue"),
                    encode(SceneReset(seed=1), 1, "rogue"),
                ),
                "stats": (encode(Instruction(text="x", id=3), 1, "rogue"),),
            },
        ),
        RawClass(
            "deep_nesting",
            "900 nested lists; maps four deep; a list inside a list field",
            {
                "instruction": (
                    b"\x97" + b"\x91" * 900 + b"\xc0",
                    _envelope("instruction", {"text": {"a": {"b": {"c": 1}}}}),
                ),
                "stats": (
                    b"\x97" + b"\x91" * 900 + b"\xc0",
                    _envelope("stats", {"process": "x", "values": [[1]], "pid": 1}),
                ),
            },
        ),
        RawClass(
            "out_of_range",
            "header seq 2**64-1, send time 2**63, instruction id 2**64-1, Hello pid -1",
            {
                "instruction": (
                    encode(Instruction(text="x", id=4), 2**64 - 1, "rogue"),
                    encode(Instruction(text="x", id=5), 1, "rogue", 2**63),
                    encode(Instruction(text="x", id=2**64 - 1), 1, "rogue"),
                ),
                "stats": (
                    encode(Stats(process="rogue", values={"x": 1.0}), 2**64 - 1, "rogue"),
                    encode(Hello("robot", cfg.name, big, n, 2**31), 1, "robot"),
                ),
            },
        ),
        RawClass(
            "nonfinite",
            "Stats values NaN / -inf (the links a peer reaches carry no arrays)",
            {
                "stats": (
                    encode(Stats(process="rogue", values={"x": math.nan}), 1, "rogue"),
                    encode(Stats(process="rogue", values={"y": -math.inf}), 1, "rogue"),
                ),
            },
        ),
        RawClass(
            "huge_claims",
            "5-byte frames claiming 2**32-1 array / map entries; an array header of shape "
            "(2**32-1,)*4 over 8 bytes",
            {
                t: (
                    b"\xdd\xff\xff\xff\xff",
                    b"\xdf\xff\xff\xff\xff",
                    _envelope(k, {f: msgpack.ExtType(1, _nd_head((2**32 - 1,) * 4))}),
                )
                for t, k, f in (
                    ("instruction", "instruction", "text"),
                    ("stats", "stats", "values"),
                )
            },
        ),
        RawClass(
            "bad_field",
            "Instruction text a number; Stats values a string; Hello pid a float",
            {
                "instruction": (_envelope("instruction", {"text": 5, "id": 1}),),
                "stats": (
                    _envelope("stats", {"process": "x", "values": "no", "pid": 1}),
                    _envelope(
                        "hello",
                        {"role": "x", "robot": "x", "latent_dim": 1, "n_joints": 1, "pid": 1.5},
                    ),
                ),
            },
        ),
        RawClass("garbage", "random bytes, 1-300 long", {t: garbage for t in REACHABLE}),
        RawClass(
            "oversized",
            "1 MiB and 9 MiB frames (over every limit of these links)",
            {t: (b"\x00" * (1 << 20), b"\x00" * (9 << 20)) for t in REACHABLE},
        ),
    ]


def _nd_head(shape: tuple[int, ...]) -> bytes:
    return struct.pack(f"<B3sB{len(shape)}I", 3, b"<f4", len(shape), *shape) + b"\x00" * 8


def expected(cfg: RobotConfig, topic: str, frame: bytes) -> str:
    """The outcome `frame` must get at `topic`'s receiver in a running system: its drop reason,
    "zmq_maxmsgsize" (ZeroMQ refuses it before it is read) or "accepted"."""
    spec = receive_spec(cfg, topic)
    if len(frame) > spec["limits"].max_bytes:
        return "zmq_maxmsgsize"
    try:
        decode(frame, REACHABLE[topic], **spec)
    except DropError as exc:
        return exc.reason
    return "accepted"


def instruction_refusals(cfg: RobotConfig) -> list[tuple[str, str, str]]:
    """(what, text, reason System 2 counts it under) for Instructions a peer sends directly:
    texts that `dualsys say` never sends (it refuses them first) or cannot send (NUL)."""
    n = cfg.system2.max_instruction_chars
    return [
        ("NUL inside", "wave\x00 hand", "not_text"),
        ("ANSI escape", "\x1b[31mred\x1b[0m", "not_text"),
        ("bidi override U+202E", "\u202ednah thgir", "not_text"),
        ("bell and backspace", "wave\x07\x08", "not_text"),
        (f"{n + 1} characters", "a" * (n + 1), "too_long"),
        ("empty", "", "empty"),
        ("whitespace only", " \t\n ", "empty"),
    ]
