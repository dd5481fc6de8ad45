"""Codec: round trips, and every kind of bad message refused with its reason."""

from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest

from dualsys import SCHEMA_VERSION
from dualsys.bus import (
    ActionChunk,
    CameraFrame,
    Command,
    DropError,
    EncodeError,
    Hello,
    Instruction,
    Latent,
    RobotState,
    Stats,
    decode,
    encode,
)

SAMPLES = [
    Latent(vector=np.linspace(0, 1, 1536, dtype=np.float32), instruction_id=3, instruction="wave"),
    RobotState(q=np.ones(44), dq=np.zeros(44), tau=np.zeros(44), sim_time=1.5),
    Command(q=np.ones(44), dq=np.zeros(44), mode="hold", tick=7),
    ActionChunk(actions=np.zeros((16, 29), np.float32), t0_mono_ns=5, dt_ns=20_000_000),
    CameraFrame(camera="head", image=np.zeros((128, 128, 3), np.uint8), sim_time=0.1),
    Instruction(text="touch the red cup", id=2),
    Stats(process="control", values={"rate_hz": 200.0, "ticks": 10}),
    Hello(role="control", robot="gr1", latent_dim=512, n_joints=44, pid=1),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TYPE)
def test_round_trip(msg) -> None:
    data = encode(msg, seq=9, source="test")
    out = decode(data)
    assert type(out) is type(msg)
    assert out.header.seq == 9 and out.header.source == "test"
    assert out.header.version == SCHEMA_VERSION
    for name in msg.FIELDS:
        a, b = getattr(msg, name), getattr(out, name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        else:
            assert a == b


def test_arrays_travel_as_raw_bytes_not_lists() -> None:
    vec = np.arange(1536, dtype=np.float32)
    data = encode(Latent(vector=vec), 1, "t")
    assert vec.tobytes() in data
    assert len(data) < vec.nbytes + 200


def test_object_dtype_refused_on_send() -> None:
    with pytest.raises(EncodeError):
        encode(Latent(vector=np.array([object()], dtype=object)), 1, "t")


def _envelope(**over) -> bytes:
    env = dict(
        type="latent",
        version=SCHEMA_VERSION,
        seq=1,
        mono=1,
        wall=1,
        source="x",
        body=Latent(vector=np.zeros(4, np.float32)).body(),
    )
    env.update(over)
    body = env["body"]
    if isinstance(body, dict):
        body = {
            k: (msgpack.ExtType(1, _nd(v)) if isinstance(v, np.ndarray) else v)
            for k, v in body.items()
        }
    return msgpack.packb(
        [env["type"], env["version"], env["seq"], env["mono"], env["wall"], env["source"], body]
    )


def _nd(arr: np.ndarray, dt: str | None = None) -> bytes:
    import struct

    d = (dt or arr.dtype.str).encode()
    return struct.pack(f"<B{len(d)}sB{arr.ndim}I", len(d), d, arr.ndim, *arr.shape) + arr.tobytes()


GOOD = encode(SAMPLES[0], 1, "t")
BAD = {
    "oversized": (b"\x00" * 100, dict(max_bytes=50)),
    "truncated": (GOOD[: len(GOOD) // 2], {}),
    "garbage": (bytes(range(256)) * 3, {}),
    "not-an-envelope": (msgpack.packb({"a": 1}), {}),
    "wrong-version": (_envelope(version=SCHEMA_VERSION + 1), {}),
    "unknown-type": (_envelope(type="teleport"), {}),
    "missing-field": (_envelope(body={"vector": np.zeros(3, np.float32)}), {}),
    "extra-field": (
        _envelope(body={**Latent(vector=np.zeros(3, np.float32)).body(), "x": 1}),
        {},
    ),
    "string-for-int": (
        _envelope(body={**Latent(vector=np.zeros(3, np.float32)).body(), "step": "7"}),
        {},
    ),
    "nan": (_envelope(body=Latent(vector=np.array([1, np.nan], np.float32)).body()), {}),
    "inf": (_envelope(body=Latent(vector=np.array([np.inf], np.float32)).body()), {}),
    "wrong-rank": (_envelope(body=Latent(vector=np.zeros((2, 2), np.float32)).body()), {}),
    "wrong-shape": (GOOD, dict(shapes={"latent": {"vector": (512,)}})),
    "negative-seq": (_envelope(seq=-1), {}),
}
REASONS = {
    "oversized": "oversized",
    "truncated": "truncated",
    "garbage": "malformed",
    "not-an-envelope": "malformed",
    "wrong-version": "wrong_version",
    "unknown-type": "wrong_type",
    "missing-field": "bad_field",
    "extra-field": "bad_field",
    "string-for-int": "bad_field",
    "nan": "nonfinite",
    "inf": "nonfinite",
    "wrong-rank": "wrong_shape",
    "wrong-shape": "wrong_shape",
    "negative-seq": "out_of_range",
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_message_refused_with_reason(case: str) -> None:
    data, kwargs = BAD[case]
    with pytest.raises(DropError) as info:
        decode(data, **kwargs)
    assert info.value.reason == REASONS[case]


def test_object_dtype_refused_on_receive() -> None:
    body = {**Latent().body(), "vector": msgpack.ExtType(1, _nd(np.zeros(2), dt="|O"))}
    data = msgpack.packb(["latent", SCHEMA_VERSION, 1, 1, 1, "x", body])
    with pytest.raises(DropError) as info:
        decode(data)
    assert info.value.reason == "bad_field"


def test_array_byte_count_must_match_shape() -> None:
    bad = _nd(np.zeros(4, np.float32))[:-4]
    body = {**Latent().body(), "vector": msgpack.ExtType(1, bad)}
    with pytest.raises(DropError) as info:
        decode(msgpack.packb(["latent", SCHEMA_VERSION, 1, 1, 1, "x", body]))
    assert info.value.reason == "truncated"


def test_accept_filters_types() -> None:
    with pytest.raises(DropError) as info:
        decode(GOOD, accept=(Command,))
    assert info.value.reason == "wrong_type"


def test_random_bytes_never_raise_anything_else() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        data = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        with contextlib.suppress(DropError):
            decode(data)
    # mutate a valid message byte by byte
    for i in range(0, len(GOOD), 7):
        data = bytearray(GOOD)
        data[i] ^= 0xFF
        try:
            msg = decode(bytes(data))
        except DropError:
            continue
        assert np.isfinite(msg.vector).all()
