"""Typed messages on the dualsys bus.

Each message class declares its body fields with a `Field` spec; the codec checks every
received body against it (types, dtypes, ranks, finiteness, string lengths). Receivers can
pin exact array shapes per field (e.g. `q` must be (44,)) through `Subscriber(shapes=...)`.
Imports only numpy: robots and tools can speak the bus without torch or mujoco.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: a non-negative count, sequence number or monotonic/wall time in ns (fits int64)
_NS = {"lo": 0, "hi": INT64_MAX}


@dataclass(frozen=True)
class Field:
    """Spec of one body field.

    kind: "float", "int", "str", "bool", "array" or "map" (str -> float).
    For arrays: allowed dtype kinds ("f", "i", "u", "b"), the largest item size in bytes, and
    rank (ndim); float arrays must be finite unless `finite` is False. For str: maximum length
    in characters. For int: the accepted range [lo, hi] (default: what fits an int64, since
    receivers keep integers in int64 arrays and nanosecond clocks).
    """

    kind: str
    dtypes: str = "f"
    ndim: int = 1
    max_len: int = 4096
    finite: bool = True
    lo: int = INT64_MIN
    hi: int = INT64_MAX
    itemsize: int = 8


@dataclass
class Header:
    """Every message's header: type, schema version, sequence number, send times, source."""

    type: str
    version: int
    seq: int
    t_mono_ns: int
    t_wall_ns: int
    source: str


#: longest accepted action interval of a chunk (the slowest policy rate: 1 Hz)
MAX_ACTION_DT_NS = 1_000_000_000
#: most objects (and most hands) a SceneTruth names, and the longest name (characters)
MAX_SCENE_ROWS = 16
MAX_SCENE_NAME_CHARS = 32

_REGISTRY: dict[str, type[Message]] = {}


class Message:
    """Base of all bus messages. Subclasses are dataclasses with a FIELDS spec."""

    TYPE: ClassVar[str] = ""
    FIELDS: ClassVar[dict[str, Field]] = {}
    header: Header | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE:
            _REGISTRY[cls.TYPE] = cls

    def body(self) -> dict[str, Any]:
        """The body as a plain dict (field name -> value), as the codec sends it."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def invalid(self) -> str:
        """Why the fields, each valid alone, do not fit together ("" when they do). The codec
        drops such a message as "out_of_range"."""
        return ""


def message_types() -> dict[str, type[Message]]:
    """All registered message classes by wire type name."""
    return dict(_REGISTRY)


def _f32(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=np.float32)


def _f64(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=np.float64)


@dataclass
class Latent(Message):
    """System 2's latent task vector, with the instruction and input times it came from."""

    TYPE: ClassVar[str] = "latent"
    FIELDS: ClassVar[dict[str, Field]] = {
        "vector": Field("array", "f", 1),
        "instruction_id": Field("int", **_NS),
        "instruction": Field("str", max_len=4096),
        "frame_t_mono_ns": Field("int", **_NS),
        "state_t_mono_ns": Field("int", **_NS),
        "step": Field("int", **_NS),
    }
    vector: np.ndarray = field(default_factory=_f32)
    instruction_id: int = 0
    instruction: str = ""
    frame_t_mono_ns: int = 0
    state_t_mono_ns: int = 0
    step: int = 0
    header: Header | None = None


@dataclass
class RobotState(Message):
    """Measured joint positions, velocities and efforts (full joint order of the config)."""

    TYPE: ClassVar[str] = "state"
    FIELDS: ClassVar[dict[str, Field]] = {
        "q": Field("array", "f", 1),
        "dq": Field("array", "f", 1),
        "tau": Field("array", "f", 1),
        "sim_time": Field("float"),
        "mode": Field("str", max_len=32),
    }
    q: np.ndarray = field(default_factory=_f64)
    dq: np.ndarray = field(default_factory=_f64)
    tau: np.ndarray = field(default_factory=_f64)
    sim_time: float = 0.0
    mode: str = "run"
    header: Header | None = None


@dataclass
class Command(Message):
    """Joint position targets (and feed-forward velocities) for the robot, full joint order.

    mode: "run" (track q), "hold" (hold the current pose, damped) or "damp" (damping only).

    The control loop also says what the command was computed from, so that a recording can be
    replayed exactly (`dualsys replay`): `t_ns`, the tick's scheduled deadline (monotonic ns,
    the time passed to `ControlLoop.update`); `state_seq`, `latent_seq`, `chunk_seq`, the header
    sequence numbers of the newest state, latent and chunk the loop had taken by then (0: none
    yet); `flags`, a bit set of FLAG_MISS_HOLD (held because of a deadline-miss streak),
    FLAG_WARMUP (a warm-up command before the loop starts) and FLAG_RAMP (the stop ramp).
    Other producers leave them 0.
    """

    TYPE: ClassVar[str] = "command"
    FIELDS: ClassVar[dict[str, Field]] = {
        "q": Field("array", "f", 1),
        "dq": Field("array", "f", 1),
        "mode": Field("str", max_len=16),
        "tick": Field("int", **_NS),
        "t_ns": Field("int", **_NS),
        "state_seq": Field("int", **_NS),
        "latent_seq": Field("int", **_NS),
        "chunk_seq": Field("int", **_NS),
        "flags": Field("int", lo=0, hi=255),
    }
    FLAG_MISS_HOLD: ClassVar[int] = 1
    FLAG_WARMUP: ClassVar[int] = 2
    FLAG_RAMP: ClassVar[int] = 4
    q: np.ndarray = field(default_factory=_f64)
    dq: np.ndarray = field(default_factory=_f64)
    mode: str = "run"
    tick: int = 0
    t_ns: int = 0
    state_seq: int = 0
    latent_seq: int = 0
    chunk_seq: int = 0
    flags: int = 0
    header: Header | None = None


@dataclass
class ActionChunk(Message):
    """A chunk of H actions (H x n_controlled) at the policy action rate.

    t0_mono_ns is the monotonic time at which actions[0] is due; `frozen` is how many leading
    actions were kept from the previous chunk (real-time chunking).
    """

    TYPE: ClassVar[str] = "chunk"
    FIELDS: ClassVar[dict[str, Field]] = {
        "actions": Field("array", "f", 2),
        "t0_mono_ns": Field("int", **_NS),
        "dt_ns": Field("int", lo=1, hi=MAX_ACTION_DT_NS),
        "chunk_id": Field("int", **_NS),
        "latent_seq": Field("int", **_NS),
        "frozen": Field("int", **_NS),
        "latency_ns": Field("int", **_NS),
    }
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    t0_mono_ns: int = 0
    dt_ns: int = 0
    chunk_id: int = 0
    latent_seq: int = 0
    frozen: int = 0
    latency_ns: int = 0
    header: Header | None = None

    def invalid(self) -> str:
        """The last action's time must fit int64; at most every action can be frozen."""
        n = len(self.actions)
        if self.frozen > n:
            return f"frozen {self.frozen} > {n} actions"
        if n and self.t0_mono_ns + (n - 1) * self.dt_ns > INT64_MAX:
            return "the last action's time overflows int64"
        return ""


@dataclass
class CameraFrame(Message):
    """One camera image, H x W x 3 uint8 RGB."""

    TYPE: ClassVar[str] = "frame"
    FIELDS: ClassVar[dict[str, Field]] = {
        "camera": Field("str", max_len=64),
        "image": Field("array", "u", 3, itemsize=1),
        "sim_time": Field("float"),
    }
    camera: str = ""
    image: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.uint8))
    sim_time: float = 0.0
    header: Header | None = None


@dataclass
class Instruction(Message):
    """A natural-language instruction for System 2."""

    TYPE: ClassVar[str] = "instruction"
    FIELDS: ClassVar[dict[str, Field]] = {
        "text": Field("str", max_len=4096),
        "id": Field("int", **_NS),
    }
    text: str = ""
    id: int = 0
    header: Header | None = None


@dataclass
class Stats(Message):
    """A process's periodic measurements (name -> number), published at ~2 Hz."""

    TYPE: ClassVar[str] = "stats"
    FIELDS: ClassVar[dict[str, Field]] = {
        "process": Field("str", max_len=64),
        "values": Field("map"),
        "pid": Field("int", lo=0, hi=2**31 - 1),
    }
    process: str = ""
    values: dict[str, float] = field(default_factory=dict)
    #: the sending process (the supervisor believes a child's Stats only from its own pid)
    pid: int = field(default_factory=os.getpid)
    header: Header | None = None


@dataclass
class Hello(Message):
    """Handshake: the first message of a link. Peers must agree on schema, robot, latent size."""

    TYPE: ClassVar[str] = "hello"
    FIELDS: ClassVar[dict[str, Field]] = {
        "role": Field("str", max_len=64),
        "robot": Field("str", max_len=128),
        "latent_dim": Field("int", lo=0, hi=2**31 - 1),
        "n_joints": Field("int", lo=0, hi=2**31 - 1),
        "pid": Field("int", lo=0, hi=2**31 - 1),
    }
    role: str = ""
    robot: str = ""
    latent_dim: int = 0
    n_joints: int = 0
    pid: int = 0
    header: Header | None = None


@dataclass
class SceneReset(Message):
    """Simulation only: re-place the scene's objects (seeded), for evaluation episodes.

    Link `scene_reset` of `[endpoints]`; hardware drivers ignore it. The simulation
    acknowledges with a SceneTruth carrying `episode` and the new object positions.
    """

    TYPE: ClassVar[str] = "scene_reset"
    FIELDS: ClassVar[dict[str, Field]] = {
        "seed": Field("int", **_NS),
        "episode": Field("int", **_NS),
    }
    seed: int = 0
    episode: int = 0
    header: Header | None = None


@dataclass
class SceneTruth(Message):
    """Simulation only: where the scene's objects and the robot's hands are (world frame, m).

    Link `scene_truth` of `[endpoints]`: the simulation publishes it after the first
    SceneReset, at once and then 10 times a second, so an evaluator scores against the true
    object positions and follows objects the robot pushes. `episode` is the last
    SceneReset applied. Row i of `objects` (n, 3) is the object named by the i-th entry of the
    comma-separated `object_names`; `hands` (m, 3) and `hand_names` likewise.
    """

    TYPE: ClassVar[str] = "scene_truth"
    FIELDS: ClassVar[dict[str, Field]] = {
        "episode": Field("int", **_NS),
        "sim_time": Field("float"),
        "objects": Field("array", "f", 2),
        "object_names": Field("str", max_len=MAX_SCENE_ROWS * (MAX_SCENE_NAME_CHARS + 1)),
        "hands": Field("array", "f", 2),
        "hand_names": Field("str", max_len=MAX_SCENE_ROWS * (MAX_SCENE_NAME_CHARS + 1)),
    }
    episode: int = 0
    sim_time: float = 0.0
    objects: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    object_names: str = ""
    hands: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    hand_names: str = ""
    header: Header | None = None

    def invalid(self) -> str:
        """Rows are 3-d points, at most MAX_SCENE_ROWS, each named once; sim_time >= 0."""
        if self.sim_time < 0:
            return f"sim_time {self.sim_time} < 0"
        for what, rows, names in (
            ("objects", self.objects, self.object_names),
            ("hands", self.hands, self.hand_names),
        ):
            if rows.shape[1:] != (3,) or len(rows) > MAX_SCENE_ROWS:
                return f"{what}: shape {rows.shape}, expected (n <= {MAX_SCENE_ROWS}, 3)"
            split = names.split(",") if names else []
            if len(split) != len(rows):
                return f"{what}: {len(split)} names for {len(rows)} rows"
            if len(set(split)) != len(split) or not all(
                0 < len(n) <= MAX_SCENE_NAME_CHARS for n in split
            ):
                return f"{what}: names must be unique, 1 to {MAX_SCENE_NAME_CHARS} characters"
        return ""

    def named_objects(self) -> dict[str, np.ndarray]:
        """Object name -> position (3,)."""
        return _named(self.objects, self.object_names)

    def named_hands(self) -> dict[str, np.ndarray]:
        """Hand name -> position (3,)."""
        return _named(self.hands, self.hand_names)


def _named(rows: np.ndarray, names: str) -> dict[str, np.ndarray]:
    return dict(zip(names.split(",") if names else [], rows, strict=True))
