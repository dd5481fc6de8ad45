"""Hypothesis strategies and property checks shared by the fuzz tests and benchmarks/fuzz.py.

Codec: any bytes, any mutation of a valid message and any msgpack envelope built from valid
and invalid parts must either decode into a message whose every field matches its declared
spec (finite floats, declared ranks and shapes, allowed dtypes) or raise `DropError` with a
known reason; nothing else may escape.

Config: any mutation of robots/gr1.toml (key deleted, type changed, random value, extra key,
raw text damage) must either load into a valid `RobotConfig` or raise `ConfigError` naming the
file and a key; nothing else may escape.
"""

from __future__ import annotations

import copy
import math
import struct
import tomllib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from hypothesis import strategies as st

from dualsys import SCHEMA_VERSION, config
from dualsys.bus.codec import DROP_REASONS, ND_EXT, DropError, decode, encode
from dualsys.bus.codec import _default as codec_default
from dualsys.bus.messages import (
    ActionChunk,
    CameraFrame,
    Command,
    Hello,
    Instruction,
    Latent,
    Message,
    RobotState,
    Stats,
    message_types,
)
from dualsys.config import ConfigError

GR1 = config.ROBOTS_DIR / "gr1.toml"
PATH_KEYS = ("checkpoint", "model_dir", "keys_dir")


def _absolute_paths(doc: dict, base: Path) -> dict:
    """File paths in the config made absolute, so a fuzzed copy loads from any directory."""
    for table in doc.values():
        if isinstance(table, dict):
            for k in PATH_KEYS:
                if isinstance(table.get(k), str) and table[k]:
                    table[k] = str((base / table[k]).resolve())
    return doc


GR1_DATA = _absolute_paths(tomllib.loads(GR1.read_text()), GR1.parent)
N = 44
#: the shapes a System 1 receiver pins (as the control loop does)
SHAPES = {
    "state": {"q": (N,), "dq": (N,), "tau": (N,)},
    "command": {"q": (N,), "dq": (N,)},
    "chunk": {"actions": (16, 29)},
    "latent": {"vector": (512,)},
}

# ----------------------------------------------------------------------------- codec

SAMPLES: list[Message] = [
    Latent(vector=np.linspace(0, 1, 512, dtype=np.float32), instruction_id=3, instruction="x"),
    RobotState(q=np.ones(N), dq=np.zeros(N), tau=np.zeros(N), sim_time=1.5),
    Command(q=np.ones(N), dq=np.zeros(N), mode="hold", tick=7),
    ActionChunk(actions=np.zeros((16, 29), np.float32), t0_mono_ns=5, dt_ns=20_000_000),
    CameraFrame(camera="head", image=np.zeros((4, 4, 3), np.uint8), sim_time=0.1),
    Instruction(text="touch the red cup", id=2),
    Stats(process="control", values={"rate_hz": 200.0, "ticks": 10}),
    Hello(role="control", robot="gr1", latent_dim=512, n_joints=N, pid=1),
]
SAMPLES += [c() for c in message_types().values() if c not in {type(m) for m in SAMPLES}]
SAMPLE_BYTES = [encode(m, 1, "fuzz", 123) for m in SAMPLES]
DTYPE_STRS = ["|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"]
BAD_DTYPE_STRS = ["|O", ">f8", "<c16", "<M8[ns]", "<U4", "|V8", "f", "", "\xff", "<f16"]

_floats = st.floats(allow_nan=True, allow_infinity=True)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    _floats,
    st.text(max_size=40),
    st.binary(max_size=40),
)


@st.composite
def nd_ext(draw: st.DrawFn) -> msgpack.ExtType:
    """An ndarray ext frame: a valid one, one with a bad header, or bytes of the wrong length."""
    dt = draw(st.sampled_from(DTYPE_STRS + BAD_DTYPE_STRS))
    ndim = draw(st.integers(0, 4))
    shape = draw(st.lists(st.integers(0, 50), min_size=ndim, max_size=ndim))
    dtb = dt.encode("utf-8", "surrogatepass")
    head = struct.pack(f"<B{len(dtb)}sB{ndim}I", len(dtb), dtb, ndim, *shape)
    try:
        size = math.prod(shape) * np.dtype(dt).itemsize
    except (TypeError, ValueError):
        size = draw(st.integers(0, 64))
    kind = draw(st.sampled_from(["exact", "exact", "random_len", "cut_head"]))
    if kind == "exact" and size <= 1 << 16:
        payload = draw(st.binary(min_size=size, max_size=size)) if size <= 256 else bytes(size)
        if dt.startswith("<f") and size and draw(st.booleans()):
            arr = np.frombuffer(bytearray(payload), dtype=dt).copy()
            arr.flat[draw(st.integers(0, arr.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf])
            )
            payload = arr.tobytes()
        return msgpack.ExtType(ND_EXT, head + payload)
    if kind == "cut_head":
        return msgpack.ExtType(ND_EXT, head[: draw(st.integers(0, len(head)))])
    return msgpack.ExtType(draw(st.sampled_from([ND_EXT, 0, 2, 99])), head + draw(st.binary()))


#: any msgpack value a hostile peer could send (nested a little)
VALUES = st.recursive(
    st.one_of(_scalars, nd_ext()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def good_value(cls: type[Message], name: str) -> Any:
    """The value of field `name` in the sample message of class `cls`."""
    for m in SAMPLES:
        if type(m) is cls:
            return getattr(m, name)
    return getattr(cls(), name)  # a message type added later: its defaults are valid


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A msgpack envelope where each part is, by chance, valid or hostile."""
    types = message_types()
    tname = draw(st.sampled_from(sorted(types)))
    cls = types[tname]
    body: dict[Any, Any] = {}
    for name in cls.FIELDS:
        if draw(st.integers(0, 9)) == 0:
            continue  # field missing
        body[name] = good_value(cls, name) if draw(st.booleans()) else draw(VALUES)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=8))] = draw(VALUES)
    parts: list[Any] = [
        tname if draw(st.integers(0, 5)) else draw(VALUES),
        SCHEMA_VERSION if draw(st.integers(0, 5)) else draw(VALUES),
        draw(st.integers(0, 2**64 - 1)) if draw(st.integers(0, 5)) else draw(VALUES),
        123 if draw(st.integers(0, 5)) else draw(VALUES),
        456 if draw(st.integers(0, 5)) else draw(VALUES),
        "fuzz" if draw(st.integers(0, 5)) else draw(VALUES),
        body if draw(st.integers(0, 7)) else draw(VALUES),
    ]
    if draw(st.integers(0, 9)) == 0:
        del parts[draw(st.integers(0, 6))]
    return msgpack.packb(parts, use_bin_type=True, default=codec_default)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoded message with bytes flipped, cut, inserted or appended."""
    data = bytearray(draw(st.sampled_from(SAMPLE_BYTES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "append", "set"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0xC1, 0xCF, 0xDD, 0xFF]))
        elif op == "cut":
            data = data[:pos]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        else:
            data += draw(st.binary(min_size=1, max_size=9))
    return bytes(data)


def any_wire_input() -> st.SearchStrategy:
    """Raw bytes, hostile envelopes and mutated valid messages, mixed."""
    return st.one_of(st.binary(max_size=512), envelopes(), mutated())


def check_decoded(msg: Message, shapes: dict | None) -> None:
    """Everything that decodes must match its class's field specs (raises AssertionError)."""
    want = (shapes or {}).get(msg.TYPE, {})
    for name, spec in msg.FIELDS.items():
        v = getattr(msg, name)
        if spec.kind == "array":
            assert isinstance(v, np.ndarray), name
            assert v.dtype.kind in spec.dtypes and not v.dtype.hasobject, (name, v.dtype)
            assert v.ndim == spec.ndim, (name, v.shape)
            if name in want:
                assert all(e in (-1, s) for e, s in zip(want[name], v.shape, strict=True))
            if v.dtype.kind == "f" and spec.finite:
                assert np.isfinite(v).all(), name
        elif spec.kind == "float":
            assert isinstance(v, (int, float)) and not isinstance(v, bool), name
            assert math.isfinite(v), name
        elif spec.kind == "int":
            assert isinstance(v, int) and not isinstance(v, bool), name
        elif spec.kind == "str":
            assert isinstance(v, str) and len(v) <= spec.max_len, name
        elif spec.kind == "bool":
            assert isinstance(v, bool), name
        elif spec.kind == "map":
            assert isinstance(v, dict)
            assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in v.values())
    h = msg.header
    assert h.version == SCHEMA_VERSION and h.type == msg.TYPE
    assert min(h.seq, h.t_mono_ns, h.t_wall_ns) >= 0


def check_codec(data: bytes, pin_shapes: bool) -> str:
    """Decode `data`; returns "ok" or the drop reason. Raises on any property violation."""
    shapes = SHAPES if pin_shapes else None
    try:
        msg = decode(data, None, shapes)
    except DropError as exc:
        assert exc.reason in DROP_REASONS, exc.reason
        return exc.reason
    check_decoded(msg, shapes)
    if isinstance(msg, Command) and pin_shapes:  # what could reach the robot
        assert msg.q.shape == (N,) and np.isfinite(msg.q).all() and np.isfinite(msg.dq).all()
    return "ok"


# ----------------------------------------------------------------------------- config


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_toml_char(c) for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _toml_char(c: str) -> str:
    if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return c


def _toml_key(k: str) -> str:
    return '"' + "".join(_toml_char(c) for c in k) + '"'


def dump_toml(doc: dict[str, Any]) -> str:
    """Serialise a TOML document: top-level scalars, then tables; nested tables inline."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not _is_table(v)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{_toml_key(k)}]")
            lines += [f"{_toml_key(a)} = {_toml_value(b)}" for a, b in v.items()]
        elif _is_table(v):
            for item in v:
                lines.append(f"[[{_toml_key(k)}]]")
                lines += [f"{_toml_key(a)} = {_toml_value(b)}" for a, b in item.items()]
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) or (
        isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
    )


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


#: every key path of gr1.toml, grouped by top-level section (so small sections get picked too)
SECTION_PATHS = {k: [(k,), *_paths(v, (k,))] for k, v in GR1_DATA.items()}
_toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 5, 7, 16, 200, 1000, 10**9, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-320, 5e-324, 1e300, 0.001, 0.5, 1.0]),
    st.text(max_size=20),
    st.sampled_from(["", "ipc://{run}/x.sock", "tcp://127.0.0.1:1", "fp32", "a\x00b", "../"]),
)


#: values that sit on the edges of what the loader checks (tiny, huge, NUL, empty, wrong sign)
EDGE_VALUES = [
    5e-324,
    1e-320,
    1e-300,
    1e300,
    2**63 - 1,
    -(2**63),
    0,
    -1,
    0.0,
    -0.0,
    math.nan,
    math.inf,
    "",
    "a\x00b",
    "../../etc",
    "\x00",
    True,
    [],
    {},
]
#: any TOML value (scalars, arrays, inline tables)
TOML_VALUES = st.recursive(
    _toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def config_mutations(draw: st.DrawFn) -> str:
    """The text of a mutated gr1.toml (structured edits, or raw text damage)."""
    if draw(st.integers(0, 9)) == 0:
        lines = dump_toml(GR1_DATA).splitlines()
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(lines) - 1))
            op = draw(st.sampled_from(["drop", "dup", "cut"]))
            if op == "drop":
                del lines[i]
            elif op == "dup":
                lines.insert(i, lines[i])
            else:
                lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        return "\n".join(lines) + "\n"
    doc = copy.deepcopy(GR1_DATA)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(sorted(SECTION_PATHS)))
        path = draw(st.sampled_from(SECTION_PATHS[section][::-1]))  # leaves first
        parent = doc
        try:
            for p in path[:-1]:
                parent = parent[p]
            last = path[-1]
            parent[last]  # noqa: B018 - the path may have vanished after an earlier edit
        except (KeyError, IndexError, TypeError):
            continue
        op = draw(st.sampled_from(["delete", "value", "value", "edge", "extra"]))
        if op == "delete":
            del parent[last]
        elif op == "value":
            parent[last] = draw(TOML_VALUES)
        elif op == "edge":
            parent[last] = draw(st.sampled_from(EDGE_VALUES))
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(TOML_VALUES)
    return dump_toml(doc)


def check_config(text: str, path: Path) -> str:
    """Load `text` from `path`; returns "ok" or the key named. Raises on any violation."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        assert exc.path == str(path), exc
        assert exc.key and isinstance(exc.key, str), exc
        assert str(path) in str(exc)
        return exc.key.split(".")[0].split("[")[0]
    check_robot_config(cfg)
    return "ok"


def check_robot_config(cfg: config.RobotConfig) -> None:
    """Invariants every loaded config must satisfy (raises AssertionError)."""
    r = cfg.rates
    assert cfg.n_joints >= 1 and len(set(cfg.joint_names)) == cfg.n_joints
    assert r.control_hz % r.action_hz == 0 and 1_000_000_000 % r.control_hz == 0
    assert r.system2_min_hz <= r.system2_target_hz <= r.system2_max_hz <= r.camera_hz
    lim = cfg.limits()
    for k, v in lim.items():
        assert np.isfinite(v).all(), k
    assert (lim["min"] <= lim["default"]).all() and (lim["default"] <= lim["max"]).all()
    assert (lim["velocity"] > 0).all() and (lim["accel"] > 0).all()
    assert len(cfg.controlled_indices) >= 1
    assert cfg.policy.replan_below < cfg.policy.chunk_horizon
    assert 0 <= cfg.budgets.miss_rate < 1
    assert cfg.budgets.latent_stale_ms <= cfg.budgets.latent_dead_ms
    for name in config.ENDPOINT_NAMES:
        assert cfg.endpoint(name, "/tmp/x").split("://")[0] in ("ipc", "tcp", "inproc")
    assert cfg.cameras and all(c.width >= 16 and c.height >= 16 for c in cfg.cameras)
    assert cfg.sim.timestep > 0 and math.isfinite(cfg.sim.timestep)
