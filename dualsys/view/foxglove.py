"""MCAP channels that Foxglove (and any MCAP tool with JSON support) decodes.

Each channel has message encoding ``json`` and a ``jsonschema`` schema. The camera, the link
poses and the instruction use Foxglove's well-known schemas (``foxglove.CompressedImage``,
``foxglove.FrameTransforms``, ``foxglove.Log``; Foxglove picks its Image, 3D and Log panels
by these names); joint states and commands are objects keyed by joint name, so a Plot panel
path reads ``/robot/joint_states.position.left_elbow_pitch_joint``. Bytes (the JPEG) are
base64 strings, as Foxglove's JSON encoding wants them.

`FoxgloveChannels` turns decoded bus messages into these records, each channel at most at its
rate in `RATES_HZ` (the raw msgpack channels keep every message for `dualsys replay`).
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np

from dualsys.bus.messages import ActionChunk, CameraFrame, Command, Latent, Message, RobotState
from dualsys.config import RobotConfig

MESSAGE_ENCODING = "json"
SCHEMA_ENCODING = "jsonschema"
#: World frame of the link poses (the robot's base sits in it at the model's base height).
WORLD_FRAME = "world"

_TIME = {
    "type": "object",
    "properties": {
        "sec": {"type": "integer", "minimum": 0},
        "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999},
    },
    "required": ["sec", "nsec"],
}
_VEC3 = {
    "type": "object",
    "properties": {k: {"type": "number"} for k in "xyz"},
    "required": list("xyz"),
}
_QUAT = {
    "type": "object",
    "properties": {k: {"type": "number"} for k in "xyzw"},
    "required": list("xyzw"),
}


def _named(names: list[str]) -> dict:
    return {
        "type": "object",
        "properties": {n: {"type": "number"} for n in names},
        "required": list(names),
        "additionalProperties": False,
    }


def schemas(cfg: RobotConfig) -> dict[str, tuple[str, dict]]:
    """topic -> (schema name, JSON schema) of every decodable channel for this robot."""
    names = list(cfg.joint_names)
    controlled = [names[i] for i in cfg.controlled_indices]
    image = {
        "type": "object",
        "properties": {
            "timestamp": _TIME,
            "frame_id": {"type": "string"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "format": {"type": "string"},
        },
        "required": ["timestamp", "frame_id", "data", "format"],
    }
    cameras = {f"/camera/{c.name}": ("foxglove.CompressedImage", image) for c in cfg.cameras}
    return cameras | {
        "/robot/joint_states": (
            "dualsys.JointState",
            {
                "type": "object",
                "properties": {
                    "timestamp": _TIME,
                    "mode": {"type": "string"},
                    "sim_time": {"type": "number"},
                    "position": _named(names),
                    "velocity": _named(names),
                    "effort": _named(names),
                },
                "required": ["timestamp", "mode", "position", "velocity", "effort"],
            },
        ),
        "/system1/command": (
            "dualsys.JointCommand",
            {
                "type": "object",
                "properties": {
                    "timestamp": _TIME,
                    "mode": {"type": "string"},
                    "tick": {"type": "integer"},
                    "flags": {"type": "integer"},
                    "position": _named(controlled),
                    "velocity": _named(controlled),
                },
                "required": ["timestamp", "mode", "tick", "position", "velocity"],
            },
        ),
        "/system1/chunk": (
            "dualsys.Chunk",
            {
                "type": "object",
                "properties": {
                    "timestamp": _TIME,
                    "chunk_id": {"type": "integer"},
                    "latent_seq": {"type": "integer"},
                    "horizon": {"type": "integer"},
                    "frozen": {"type": "integer"},
                    "dt_ms": {"type": "number"},
                    "latency_ms": {"type": "number"},
                },
                "required": ["timestamp", "chunk_id", "horizon", "latency_ms"],
            },
        ),
        "/system2/latent": (
            "dualsys.Latent",
            {
                "type": "object",
                "properties": {
                    "timestamp": _TIME,
                    "step": {"type": "integer"},
                    "instruction_id": {"type": "integer"},
                    "instruction": {"type": "string"},
                    "frame_age_ms": {"type": "number"},
                    "norm": {"type": "number"},
                },
                "required": ["timestamp", "step", "instruction_id", "instruction"],
            },
        ),
        "/system2/instruction": (
            "foxglove.Log",
            {
                "type": "object",
                "properties": {
                    "timestamp": _TIME,
                    "level": {"type": "integer", "minimum": 0, "maximum": 5},
                    "message": {"type": "string"},
                    "name": {"type": "string"},
                    "file": {"type": "string"},
                    "line": {"type": "integer", "minimum": 0},
                },
                "required": ["timestamp", "level", "message", "name", "file", "line"],
            },
        ),
        "/tf": (
            "foxglove.FrameTransforms",
            {
                "type": "object",
                "properties": {
                    "transforms": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "timestamp": _TIME,
                                "parent_frame_id": {"type": "string"},
                                "child_frame_id": {"type": "string"},
                                "translation": _VEC3,
                                "rotation": _QUAT,
                            },
                            "required": [
                                "timestamp",
                                "parent_frame_id",
                                "child_frame_id",
                                "translation",
                                "rotation",
                            ],
                        },
                    }
                },
                "required": ["transforms"],
            },
        ),
    }


#: Most records per second per decodable channel (0: every message).
RATES_HZ = {
    "/robot/joint_states": 50.0,
    "/system1/command": 50.0,
    "/tf": 25.0,
    "/system1/chunk": 0.0,
    "/system2/latent": 0.0,
    "/system2/instruction": 0.0,
}


def stamp(t_wall_ns: int) -> dict[str, int]:
    """Foxglove's time: seconds and nanoseconds."""
    return {"sec": t_wall_ns // 1_000_000_000, "nsec": t_wall_ns % 1_000_000_000}


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """An RGB uint8 image (h, w, 3) as JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _floats(names: list[str], values: np.ndarray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, values, strict=True)}


class FoxgloveChannels:
    """Decoded bus messages -> (topic, JSON bytes) records of the decodable channels.

    `poses`: a `dualsys.view.poses.RobotPoses` for /tf (None: no link poses)."""

    def __init__(self, cfg: RobotConfig, poses=None) -> None:
        self.names = list(cfg.joint_names)
        self.ctrl_idx = np.asarray(cfg.controlled_indices)
        self.controlled = [self.names[i] for i in self.ctrl_idx]
        self.poses = poses
        self.cameras = {c.name for c in cfg.cameras}
        self.next_t: dict[str, int] = dict.fromkeys(RATES_HZ, 0)
        self.instruction_id: int | None = None

    def _due(self, topic: str, t_ns: int) -> bool:
        if t_ns < self.next_t.get(topic, 0):
            return False
        hz = RATES_HZ.get(topic, 0.0)
        self.next_t[topic] = t_ns + (int(1e9 / hz) if hz > 0 else 0)
        return True

    def records(self, msg: Message, t_wall_ns: int) -> list[tuple[str, bytes]]:
        """The decodable records for one validated bus message received at t_wall_ns."""
        out: list[tuple[str, dict]] = []
        ts = stamp(msg.header.t_wall_ns if msg.header else t_wall_ns)
        if isinstance(msg, RobotState) and len(msg.q) == len(self.names):
            if self._due("/robot/joint_states", t_wall_ns):
                out.append(("/robot/joint_states", self._state(msg, ts)))
            if self.poses is not None and self._due("/tf", t_wall_ns):
                out.append(("/tf", self._tf(msg.q, ts)))
        elif isinstance(msg, Command) and len(msg.q) == len(self.names):
            if self._due("/system1/command", t_wall_ns):
                out.append(("/system1/command", self._command(msg, ts)))
        elif isinstance(msg, ActionChunk):
            out.append(("/system1/chunk", self._chunk(msg, ts)))
        elif isinstance(msg, Latent):
            out.append(("/system2/latent", self._latent(msg, ts)))
            if msg.instruction_id != self.instruction_id:
                self.instruction_id = msg.instruction_id
                log = {"timestamp": ts, "level": 2, "message": msg.instruction}
                out.append(("/system2/instruction", dict(log, name="system2", file="", line=0)))
        elif isinstance(msg, CameraFrame) and self._rgb(msg):
            frame = {"timestamp": ts, "frame_id": msg.camera, "format": "jpeg"}
            frame["data"] = base64.b64encode(jpeg(msg.image)).decode("ascii")
            out.append((f"/camera/{msg.camera}", frame))
        return [(t, json.dumps(d, separators=(",", ":")).encode()) for t, d in out]

    def _rgb(self, m: CameraFrame) -> bool:
        img = m.image
        return (
            m.camera in self.cameras
            and img.ndim == 3
            and img.shape[2] == 3
            and img.dtype == np.uint8
        )

    def _state(self, m: RobotState, ts: dict) -> dict:
        return {
            "timestamp": ts,
            "mode": m.mode,
            "sim_time": float(m.sim_time),
            "position": _floats(self.names, m.q),
            "velocity": _floats(self.names, m.dq),
            "effort": _floats(self.names, m.tau),
        }

    def _command(self, m: Command, ts: dict) -> dict:
        return {
            "timestamp": ts,
            "mode": m.mode,
            "tick": int(m.tick),
            "flags": int(m.flags),
            "position": _floats(self.controlled, m.q[self.ctrl_idx]),
            "velocity": _floats(self.controlled, m.dq[self.ctrl_idx]),
        }

    def _chunk(self, m: ActionChunk, ts: dict) -> dict:
        return {
            "timestamp": ts,
            "chunk_id": int(m.chunk_id),
            "latent_seq": int(m.latent_seq),
            "horizon": int(m.actions.shape[0]) if m.actions.ndim == 2 else 0,
            "frozen": int(m.frozen),
            "dt_ms": m.dt_ns / 1e6,
            "latency_ms": m.latency_ns / 1e6,
        }

    def _latent(self, m: Latent, ts: dict) -> dict:
        age = 0.0
        if m.header is not None and m.frame_t_mono_ns:
            age = max(0.0, (m.header.t_mono_ns - m.frame_t_mono_ns) / 1e6)
        return {
            "timestamp": ts,
            "step": int(m.step),
            "instruction_id": int(m.instruction_id),
            "instruction": m.instruction,
            "frame_age_ms": age,
            "norm": float(np.linalg.norm(m.vector)) if m.vector.size else 0.0,
        }

    def _tf(self, q: np.ndarray, ts: dict) -> dict:
        pos, quat = self.poses.update(q)
        return {
            "transforms": [
                {
                    "timestamp": ts,
                    "parent_frame_id": WORLD_FRAME,
                    "child_frame_id": name,
                    "translation": {"x": float(p[0]), "y": float(p[1]), "z": float(p[2])},
                    "rotation": {
                        "x": float(r[1]),
                        "y": float(r[2]),
                        "z": float(r[3]),
                        "w": float(r[0]),
                    },
                }
                for name, p, r in zip(self.poses.names, pos, quat, strict=True)
            ]
        }
