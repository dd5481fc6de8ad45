"""Receive limits per bus topic, derived from a robot config.

A receiver must know, before it decodes a message, how large a valid one on its link can be:
a latent is latent_dim floats plus a short instruction, a chunk is horizon x controlled joints,
a camera frame is width x height x 3 bytes. `topic_limits(cfg)` computes, per topic, the
largest valid encoded message and what msgpack may allocate while unpacking one (longest
string, bin, array, map and ndarray ext), so a few hostile bytes cannot make the receiver
allocate much more than a valid message would. `receive_spec(cfg, topic)` gives the keyword
arguments of a `Subscriber` for a topic: these limits and the array shapes it pins.

The sizes are upper bounds of the msgpack encoding (every integer as 9 bytes, every character
as 4 UTF-8 bytes, every float array at the largest item size its field allows), so no valid
message is ever refused as oversized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

from dualsys.bus.messages import (
    MAX_SCENE_ROWS,
    ActionChunk,
    CameraFrame,
    Command,
    Field,
    Hello,
    Instruction,
    Latent,
    Message,
    RobotState,
    SceneReset,
    SceneTruth,
    Stats,
    message_types,
)
from dualsys.config import RobotConfig

#: largest message any link accepts (camera frames are the largest messages)
MAX_BYTES = 8 * 1024 * 1024
#: the envelope [type, version, seq, t_mono_ns, t_wall_ns, source, body]
ENVELOPE_LEN = 7
#: longest header source (characters)
MAX_SOURCE_CHARS = 128
#: entries and key length of a map field (Stats values)
MAX_MAP_ENTRIES = 256
MAX_MAP_KEY_CHARS = 64
#: highest array rank any message uses (images: 3)
MAX_NDIM = 4
_INT = 9  # msgpack int64 / uint64: marker + 8 bytes
_MAP_HEAD = 5  # map32 marker + 4-byte length
_EXT_HEAD = 6  # ext32 marker + 4-byte length + type byte


@dataclass(frozen=True)
class Limits:
    """What one receiver accepts: whole-message size and msgpack's per-object bounds."""

    max_bytes: int
    max_str_len: int
    max_map_len: int
    max_ext_len: int
    max_bin_len: int = 0  # no message carries msgpack bin
    max_array_len: int = ENVELOPE_LEN  # the envelope is the only msgpack array

    @cached_property
    def unpack_options(self) -> dict[str, int]:
        """The msgpack `unpackb` keyword arguments that enforce these limits (built once)."""
        return {
            "max_str_len": self.max_str_len,
            "max_bin_len": self.max_bin_len,
            "max_array_len": self.max_array_len,
            "max_map_len": self.max_map_len,
            "max_ext_len": self.max_ext_len,
        }


#: for receivers without a robot config (tools, tests): every valid message of any type
DEFAULT = Limits(
    max_bytes=MAX_BYTES,
    max_str_len=4 * Instruction.FIELDS["text"].max_len,
    max_map_len=MAX_MAP_ENTRIES,
    max_ext_len=MAX_BYTES,
)


def _str_bytes(chars: int) -> int:
    return 5 + 4 * chars  # str32 marker + length, at most 4 UTF-8 bytes a character


def _ext_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    head = 1 + 3 + 1 + 4 * len(shape)  # dtype length, "<f8", ndim, uint32 per dimension
    return head + math.prod(shape) * itemsize


def _field_bytes(spec: Field, shape: tuple[int, ...] | None, chars: int | None) -> int:
    if spec.kind == "array":
        assert shape is not None, "every array field needs a shape to size the topic"
        return _EXT_HEAD + _ext_bytes(shape, spec.itemsize)
    if spec.kind == "str":
        return _str_bytes(spec.max_len if chars is None else chars)
    if spec.kind == "map":
        return _MAP_HEAD + MAX_MAP_ENTRIES * (_str_bytes(MAX_MAP_KEY_CHARS) + _INT)
    return _INT  # int, float, bool


@cache
def _most_fields() -> int:
    return max(len(cls.FIELDS) for cls in message_types().values())


def message_limits(
    cls: type[Message],
    shapes: dict[str, tuple[int, ...]] | None = None,
    chars: dict[str, int] | None = None,
) -> Limits:
    """Limits for one message type with the given array shapes and string lengths (chars:
    field -> characters, overriding the field's own max_len)."""
    shapes, chars = shapes or {}, chars or {}
    size = 1 + _str_bytes(len(cls.TYPE)) + 4 * _INT + _str_bytes(MAX_SOURCE_CHARS) + _MAP_HEAD
    longest_str = max(4 * MAX_SOURCE_CHARS, 4 * max(map(len, cls.FIELDS)))
    ext = 0
    for name, spec in cls.FIELDS.items():
        size += _str_bytes(len(name)) + _field_bytes(spec, shapes.get(name), chars.get(name))
        if spec.kind == "str":
            longest_str = max(longest_str, 4 * chars.get(name, spec.max_len))
        elif spec.kind == "map":
            longest_str = max(longest_str, 4 * MAX_MAP_KEY_CHARS)
        elif spec.kind == "array":
            ext = max(ext, _ext_bytes(shapes[name], spec.itemsize))
    has_map = any(s.kind == "map" for s in cls.FIELDS.values())
    return Limits(
        max_bytes=size,
        max_str_len=longest_str,
        # any message type's field count: a message of another type on this link is then
        # refused as `wrong_type` (the precise reason), not as an over-long map
        max_map_len=max(_most_fields(), MAX_MAP_ENTRIES if has_map else 0),
        max_ext_len=ext,
    )


def _widest(*limits: Limits) -> Limits:
    return Limits(
        max_bytes=max(x.max_bytes for x in limits),
        max_str_len=max(x.max_str_len for x in limits),
        max_map_len=max(x.max_map_len for x in limits),
        max_ext_len=max(x.max_ext_len for x in limits),
    )


def topic_shapes(cfg: RobotConfig) -> dict[str, dict[str, dict[str, tuple[int, ...]]]]:
    """Per topic, the array shapes its receivers pin (message type -> field -> shape; -1 =
    any length)."""
    n, cam = cfg.n_joints, cfg.cameras[0]
    return {
        "state": {"state": {"q": (n,), "dq": (n,), "tau": (n,)}},
        "command": {"command": {"q": (n,), "dq": (-1,)}},  # dq may be empty: no feed-forward
        "camera": {"frame": {"image": (cam.height, cam.width, 3)}},
        "latent": {"latent": {"vector": (cfg.system2.latent_dim,)}},
        "latent_local": {"latent": {"vector": (cfg.system2.latent_dim,)}},
        "chunk": {"chunk": {"actions": (cfg.policy.chunk_horizon, len(cfg.controlled_indices))}},
        "instruction": {},
        "stats": {},
        "scene_reset": {},
        "scene_truth": {"scene_truth": {"objects": (-1, 3), "hands": (-1, 3)}},
    }


def topic_limits(cfg: RobotConfig) -> dict[str, Limits]:
    """Per topic (the config's link names), the limits of its receivers."""
    n = cfg.n_joints
    frames = [message_limits(CameraFrame, {"image": (c.height, c.width, 3)}) for c in cfg.cameras]
    # System 2 refuses longer instructions, so no valid latent carries one
    latent = message_limits(
        Latent,
        {"vector": (cfg.system2.latent_dim,)},
        {"instruction": cfg.system2.max_instruction_chars},
    )
    return {
        "state": message_limits(RobotState, {"q": (n,), "dq": (n,), "tau": (n,)}),
        "command": message_limits(Command, {"q": (n,), "dq": (n,)}),
        "camera": _widest(*frames),
        "latent": latent,
        "latent_local": latent,  # the slot carries the same messages
        "chunk": message_limits(
            ActionChunk, {"actions": (cfg.policy.chunk_horizon, len(cfg.controlled_indices))}
        ),
        # the full field length: a too-long instruction is refused and counted by System 2
        "instruction": message_limits(Instruction),
        "stats": _widest(message_limits(Stats), message_limits(Hello)),
        "scene_reset": message_limits(SceneReset),
        # the object and hand counts are the scene's (n <= MAX_SCENE_ROWS, SceneTruth.invalid)
        "scene_truth": message_limits(
            SceneTruth, {"objects": (MAX_SCENE_ROWS, 3), "hands": (MAX_SCENE_ROWS, 3)}
        ),
    }


def receive_spec(cfg: RobotConfig, topic: str) -> dict[str, Any]:
    """Keyword arguments of a `Subscriber` on `topic`: `shapes` and `limits` for this robot."""
    return {"shapes": topic_shapes(cfg)[topic], "limits": topic_limits(cfg)[topic]}
