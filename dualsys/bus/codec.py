"""msgpack codec for bus messages. No pickle, ever.

Wire form: a msgpack array ``[type, version, seq, t_mono_ns, t_wall_ns, source, body]`` where
body is a map of field name to value and numpy arrays travel as msgpack ext type 1 holding
dtype string, shape and raw little-endian bytes. Object dtypes are refused on both sides.

`decode` never raises anything but `DropError`, whose `reason` is one of `DROP_REASONS`. Its
work is bounded by the receiver's `Limits` (dualsys/bus/limits.py): the message size, msgpack's
longest string / bin / array / map / ext, and nesting (at most envelope -> body -> map), so a
small message cannot claim a large allocation. Integers must lie in their field's range (every
one fits an int64): a receiver's int64 arrays and clocks never overflow.
"""

from __future__ import annotations

import math
import struct
import time
from typing import Any

import msgpack
import numpy as np

from dualsys import SCHEMA_VERSION
from dualsys.bus.limits import DEFAULT, MAX_BYTES, MAX_MAP_KEY_CHARS, MAX_NDIM, Limits  # noqa: F401 (MAX_BYTES re-exported)
from dualsys.bus.messages import INT64_MAX, Field, Header, Message, message_types

ND_EXT = 1
ALLOWED_DTYPES = frozenset(
    ["|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"]
)
DROP_REASONS = (
    "oversized",
    "truncated",
    "malformed",
    "wrong_version",
    "wrong_type",
    "bad_field",
    "wrong_shape",
    "nonfinite",
    "out_of_range",
    "torn",  # shm:// only: the slot was being written through every read retry
)


class DropError(Exception):
    """A received message was refused; `reason` says why (one of DROP_REASONS)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class EncodeError(ValueError):
    """A message cannot be encoded (object dtype, unsupported value)."""


def _pack_array(arr: np.ndarray) -> msgpack.ExtType:
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        raise EncodeError(f"array dtype {arr.dtype} cannot travel on the bus")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    dt = arr.dtype.str.encode()
    head = struct.pack(f"<B{len(dt)}sB{arr.ndim}I", len(dt), dt, arr.ndim, *arr.shape)
    return msgpack.ExtType(ND_EXT, head + arr.tobytes())


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _pack_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise EncodeError(f"cannot encode {type(obj).__name__} on the bus")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != ND_EXT:
        raise DropError("malformed", f"unknown ext type {code}")
    try:
        n = data[0]
        dt = data[1 : 1 + n].decode("ascii")
        ndim = data[1 + n]
        off = 2 + n
        if ndim > MAX_NDIM:
            raise DropError("wrong_shape", f"array of rank {ndim} > {MAX_NDIM}")
        shape = struct.unpack_from(f"<{ndim}I", data, off)
        off += 4 * ndim
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise DropError("malformed", f"bad array header: {exc}") from None
    if dt not in ALLOWED_DTYPES:
        raise DropError("bad_field", f"array dtype {dt!r} not allowed")
    dtype = np.dtype(dt)
    count = math.prod(shape)
    if len(data) - off != count * dtype.itemsize:
        raise DropError("truncated", f"array of shape {shape} {dt} has {len(data) - off} bytes")
    return np.frombuffer(data, dtype=dtype, count=count, offset=off).reshape(shape)


def _flat_list(items: list) -> list:
    """msgpack list_hook: a list holds no list (the envelope is the only list)."""
    for x in items:
        if type(x) is list:
            raise DropError("malformed", "nested too deep")
    return items


def _shallow_map(d: dict) -> dict:
    """msgpack object_hook: a map's map or list values hold only scalars (depth <= 3)."""
    for v in d.values():
        t = type(v)
        if t is dict:
            for x in v.values():
                if type(x) in (dict, list):
                    raise DropError("malformed", "nested too deep")
        elif t is list:
            for x in v:
                if type(x) in (dict, list):
                    raise DropError("malformed", "nested too deep")
    return d


def encode(msg: Message, seq: int, source: str, t_mono_ns: int | None = None) -> bytes:
    """Encode a message with a fresh header (times default to now)."""
    mono = time.monotonic_ns() if t_mono_ns is None else t_mono_ns
    try:
        return msgpack.packb(
            [msg.TYPE, SCHEMA_VERSION, seq, mono, time.time_ns(), source, msg.body()],
            default=_default,
            use_bin_type=True,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"{msg.TYPE}: {exc}") from None


def _check_field(name: str, spec: Field, value: Any, shape: tuple[int, ...] | None) -> None:
    kind = spec.kind
    if kind == "array":
        if not isinstance(value, np.ndarray):
            raise DropError("bad_field", f"{name}: expected an array")
        if value.dtype.kind not in spec.dtypes or value.dtype.itemsize > spec.itemsize:
            raise DropError("bad_field", f"{name}: dtype {value.dtype} not allowed")
        if value.ndim != spec.ndim:
            raise DropError("wrong_shape", f"{name}: rank {value.ndim}, expected {spec.ndim}")
        if shape is not None and any(
            e not in (-1, s) for e, s in zip(shape, value.shape, strict=False)
        ):
            raise DropError("wrong_shape", f"{name}: shape {value.shape}, expected {shape}")
        if spec.finite and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise DropError("nonfinite", f"{name} holds NaN or inf")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DropError("bad_field", f"{name}: expected a number")
        if spec.finite and not math.isfinite(value):
            raise DropError("nonfinite", f"{name} is {value}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise DropError("bad_field", f"{name}: expected an integer")
        if not spec.lo <= value <= spec.hi:
            raise DropError("out_of_range", f"{name} = {value} outside [{spec.lo}, {spec.hi}]")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise DropError("bad_field", f"{name}: expected a boolean")
    elif kind == "str":
        if not isinstance(value, str) or len(value) > spec.max_len:
            raise DropError("bad_field", f"{name}: expected a string of <= {spec.max_len} chars")
    elif kind == "map":
        if not isinstance(value, dict) or len(value) > 256:
            raise DropError("bad_field", f"{name}: expected a map of <= 256 entries")
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise DropError("bad_field", f"{name}: entries must be str -> number")
            if len(k) > MAX_MAP_KEY_CHARS:
                raise DropError("bad_field", f"{name}: key longer than {MAX_MAP_KEY_CHARS}")
            if not math.isfinite(v):
                raise DropError("nonfinite", f"{name}[{k!r}] is {v}")


def decode(
    data: bytes | memoryview,
    accept: tuple[type[Message], ...] | None = None,
    shapes: dict[str, dict[str, tuple[int, ...]]] | None = None,
    max_bytes: int | None = None,
    limits: Limits = DEFAULT,
) -> Message:
    """Decode and validate one message. Raises only DropError (with a reason).

    accept: the message classes this receiver takes (others are "wrong_type").
    shapes: per message type, per field, the exact array shape expected (-1 = any).
    limits: the receiver's size bounds (dualsys.bus.limits); max_bytes, when given, replaces
    limits.max_bytes.
    """
    cap = limits.max_bytes if max_bytes is None else max_bytes
    if len(data) > cap:
        raise DropError("oversized", f"{len(data)} bytes > {cap}")
    try:
        obj = msgpack.unpackb(
            data,
            ext_hook=_ext_hook,
            list_hook=_flat_list,
            object_hook=_shallow_map,
            raw=False,
            strict_map_key=True,
            **limits.unpack_options,
        )
    except DropError:
        raise
    except msgpack.ExtraData:
        raise DropError("malformed", "trailing bytes after message") from None
    except ValueError as exc:  # StackError (nesting beyond msgpack's stack) included
        text = str(exc).lower()
        reason = "truncated" if "incomplete" in text else "malformed"
        if "exceeds max_" in text:
            reason = "oversized"
        raise DropError(reason, str(exc)) from None
    except Exception as exc:  # msgpack raises assorted types on garbage; none may escape
        raise DropError("malformed", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, list) or len(obj) != 7:
        raise DropError("malformed", "expected a 7-element envelope")
    mtype, version, seq, mono, wall, source, body = obj
    # type check first: `!=` on an array-valued version would give an array, not a bool
    if isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION:
        raise DropError("wrong_version", f"schema {version!r}, expected {SCHEMA_VERSION}")
    types = message_types()
    if not isinstance(mtype, str) or mtype not in types:
        raise DropError("wrong_type", f"unknown message type {mtype!r}")
    cls = types[mtype]
    if accept is not None and cls not in accept:
        raise DropError("wrong_type", f"{mtype!r} not accepted here")
    for v in (seq, mono, wall):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DropError("malformed", "header numbers must be integers")
        if not 0 <= v <= INT64_MAX:
            raise DropError("out_of_range", f"header number {v} outside [0, 2**63 - 1]")
    if not isinstance(source, str) or len(source) > 128:
        raise DropError("malformed", "header source must be a short string")
    if not isinstance(body, dict) or set(body) != set(cls.FIELDS):
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise DropError("bad_field", f"{mtype}: fields {got}, expected {sorted(cls.FIELDS)}")
    want = (shapes or {}).get(mtype, {})
    for name, spec in cls.FIELDS.items():
        _check_field(name, spec, body[name], want.get(name))
    msg = cls(**body)
    bad = msg.invalid()
    if bad:
        raise DropError("out_of_range", f"{mtype}: {bad}")
    msg.header = Header(mtype, version, seq, mono, wall, source)
    return msg
