"""The compiled message check (dualsys.bus.fastcodec) never accepts what the codec refuses,
and what it accepts, it reads as the codec does; Subscriber.take counts like recv_latest."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualsys.bus.codec import DropError, decode, encode
from dualsys.bus.fastcodec import MessageView, parse_into, utf8_chars
from dualsys.bus.limits import message_limits
from dualsys.bus.messages import Latent, RobotState
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.testing.nrt import nrt_allocations

DIM = 64
SHAPES = {"latent": {"vector": (DIM,)}, "state": {"q": (5,), "dq": (5,), "tau": (5,)}}
LIMITS = {
    "latent": message_limits(Latent, SHAPES["latent"]),
    "state": message_limits(RobotState, SHAPES["state"]),
}
ARRAY = {"latent": "vector", "state": "q"}
CLS = {"latent": Latent, "state": RobotState}
INTS = {"latent": ("instruction_id", "frame_t_mono_ns", "state_t_mono_ns", "step"), "state": ()}


def _latent(text: str = "touch the red cup", vec: np.ndarray | None = None) -> bytes:
    v = np.linspace(-1, 1, DIM, dtype=np.float32) if vec is None else vec
    msg = Latent(vector=v, instruction=text, instruction_id=7, frame_t_mono_ns=11, step=3)
    return encode(msg, 42, "system2")


def _state() -> bytes:
    q = np.arange(5, dtype=np.float64)
    return encode(RobotState(q=q, dq=-q, tau=q * 2, sim_time=1.5), 9, "robot")


def _view(kind: str) -> MessageView:
    return MessageView(CLS[kind], SHAPES[kind], LIMITS[kind], ARRAY[kind])


def _codec(kind: str, data: bytes):
    try:
        return decode(data, (CLS[kind],), SHAPES, limits=LIMITS[kind])
    except DropError:
        return None


def _agrees(kind: str, data: bytes) -> None:
    """What the view takes, the codec accepts with the same values."""
    v = _view(kind)
    buf = np.frombuffer(data, np.uint8)
    took = v.take(buf, len(data))
    msg = _codec(kind, data)
    if not took:
        return
    assert msg is not None, "the compiled check took a message the codec refuses"
    h = msg.header
    assert (v.seq, v.t_mono_ns, int(v.meta[2])) == (h.seq, h.t_mono_ns, h.t_wall_ns)
    for name in INTS[kind]:
        assert v.int(name) == getattr(msg, name)
    a = getattr(msg, ARRAY[kind])
    assert np.abs(a).max() <= np.finfo(np.float32).max  # the view stores only what fits
    np.testing.assert_array_equal(v.array, a.astype(np.float32))
    if kind == "state":
        assert v.fmeta[3] == msg.sim_time


@pytest.mark.parametrize("kind", ["latent", "state"])
def test_valid_messages_are_taken_with_the_codecs_values(kind) -> None:
    text = "touchez la tasse rouge \u00e9 \u2615 \U0001f600"  # 2-, 3- and 4-byte UTF-8
    data = _latent(text) if kind == "latent" else _state()
    v = _view(kind)
    assert v.take(np.frombuffer(data, np.uint8), len(data))
    _agrees(kind, data)


def _bad_latents() -> dict[str, bytes]:
    good = msgpack.unpackb(_latent(), raw=False, strict_map_key=False)
    out = {}

    def variant(name, fn):
        env = msgpack.unpackb(_latent(), raw=False, strict_map_key=False)
        fn(env)
        out[name] = msgpack.packb(env, use_bin_type=True)

    nan = np.linspace(-1, 1, DIM, dtype=np.float32)
    nan[5] = np.nan
    out["nan"] = _latent(vec=nan)
    out["inf"] = _latent(vec=np.full(DIM, np.inf, np.float32))
    out["short vector"] = _latent(vec=np.zeros(DIM - 1, np.float32))
    out["2-d vector"] = encode(Latent(vector=np.zeros((8, 8), np.float32)), 1, "s")
    out["too long"] = _latent("x" * 5000)
    variant("version", lambda e: e.__setitem__(1, 2))
    variant("bool seq", lambda e: e.__setitem__(2, True))
    variant("negative seq", lambda e: e.__setitem__(2, -1))
    variant("uint64 seq", lambda e: e.__setitem__(2, 2**64 - 1))
    variant("type", lambda e: e.__setitem__(0, "chunk"))
    variant("missing field", lambda e: e[6].pop("step"))
    variant("extra field", lambda e: e[6].__setitem__("extra", 1))
    variant("bool field", lambda e: e[6].__setitem__("step", False))
    variant("float field", lambda e: e[6].__setitem__("step", 1.0))
    variant("str source", lambda e: e.__setitem__(5, "s" * 129))
    variant("nested", lambda e: e[6].__setitem__("step", [1]))
    variant("instruction as int", lambda e: e[6].__setitem__("instruction", 5))
    # invalid UTF-8: a surrogate, an overlong NUL, a lone continuation byte, a truncated form
    for i, raw in enumerate((b"\xed\xa0\x80", b"\xc0\x80", b"\x80", b"\xe2\x82")):
        data = _latent("ab")
        out[f"utf8 {i}"] = data.replace(b"\xa2ab", bytes([0xA0 | len(raw)]) + raw)
    out["truncated"] = _latent()[:-3]
    out["trailing"] = _latent() + b"\x00"
    out["empty"] = b""
    assert good  # the envelope itself is valid
    return out


@pytest.mark.parametrize("name", list(_bad_latents()))
def test_hostile_latents_are_never_taken_where_the_codec_refuses(name) -> None:
    data = _bad_latents()[name]
    v = _view("latent")
    took = v.take(np.frombuffer(data, np.uint8), len(data))
    if _codec("latent", data) is None:
        assert not took, f"{name}: taken, but the codec refuses it"
    _agrees("latent", data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["latent", "state"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10**6),
)
def test_mutated_messages_agree_with_the_codec(kind, edits, cut) -> None:
    data = bytearray(_latent() if kind == "latent" else _state())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    _agrees(kind, bytes(data))
    _agrees(kind, bytes(data[: cut % (len(data) + 1)]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_utf8_check_matches_python(raw) -> None:
    try:
        want = len(raw.decode("utf-8"))
    except UnicodeDecodeError:
        want = -1
    assert utf8_chars(np.frombuffer(raw, np.uint8), 0, len(raw)) == want


def test_a_type_with_cross_field_rules_is_left_to_the_codec() -> None:
    from dualsys.bus.messages import SceneTruth

    with pytest.raises(ValueError, match="cross-field"):
        MessageView(SceneTruth, {"objects": (-1, 3)})
    with pytest.raises(ValueError, match="fixed shape"):
        MessageView(Latent, {"vector": (-1,)}, array_field="vector")


def test_the_compiled_check_allocates_nothing() -> None:
    """numba's runtime counts one allocation per array argument per call (the wrapper made
    on entry) and none more: the check itself allocates nothing, valid message or not."""
    v = _view("latent")
    for data in (_latent(), _bad_latents()["nan"]):
        buf = np.frombuffer(data, np.uint8)
        args = (buf, len(data), *v.plan.args, *v.args)
        arrays = sum(isinstance(a, np.ndarray) for a in args)
        parse_into(*args)  # compiled or loaded from the cache

        def calls(n: int, args=args) -> None:
            for _ in range(n):
                parse_into(*args)

        assert nrt_allocations(calls, 500) == 500 * arrays


@pytest.fixture
def link(tmp_path):
    ctx = zmq.Context()
    ep = f"ipc://{tmp_path}/latent"
    pub = Publisher(ctx, ep, "system2", bind=True)
    sub = Subscriber(ctx, ep, (Latent,), shapes=SHAPES, limits=LIMITS["latent"])
    time.sleep(0.3)
    yield pub, sub
    pub.close()
    sub.close()
    ctx.term()


def _wait_take(sub: Subscriber, view: MessageView) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if sub.sock.poll(100) and sub.take(view):
            return True
    return False


def test_subscriber_take_counts_like_recv_latest(link) -> None:
    pub, sub = link
    view = sub.view(Latent, "vector")
    vec = np.arange(DIM, dtype=np.float32)
    pub.send(Latent(vector=vec, instruction_id=5))
    assert _wait_take(sub, view)
    assert view.int("instruction_id") == 5 and view.seq == 1 and sub.received == 1
    np.testing.assert_array_equal(view.array, vec)
    pub.seq += 3  # three latents lost: a sequence gap
    pub.send(Latent(vector=vec * 2, instruction_id=6))
    assert _wait_take(sub, view)
    assert view.seq == 5 and sub.gaps == 3 and sub.received == 2
    # a float16 vector: valid for the codec, left to it by the compiled check, still taken
    pub.send(Latent(vector=np.ones(DIM, np.float16), instruction_id=8))
    assert _wait_take(sub, view)
    assert view.int("instruction_id") == 8 and (view.array == 1).all() and sub.received == 3
    # float64 beyond float32's range: valid for the codec, but the view holds float32
    pub.send(Latent(vector=np.full(DIM, 1e300), instruction_id=10))
    assert sub.sock.poll(2000)
    assert not sub.take(view)
    assert sub.dropped["out_of_range"] == 1 and view.int("instruction_id") == 8
    # a NaN: dropped and counted, the view keeps the last latent
    bad = np.ones(DIM, np.float32)
    bad[0] = np.nan
    pub.send(Latent(vector=bad, instruction_id=9))
    assert sub.sock.poll(2000)
    assert not sub.take(view)
    assert sub.dropped["nonfinite"] == 1 and view.int("instruction_id") == 8


def test_subscriber_take_from_a_slot(tmp_path) -> None:
    ctx = zmq.Context()
    ep = f"shm://{tmp_path}/latent.slot"
    pub = Publisher(ctx, ep, "system2", max_bytes=LIMITS["latent"].max_bytes)
    sub = Subscriber(ctx, ep, (Latent,), shapes=SHAPES, limits=LIMITS["latent"])
    view = sub.view(Latent, "vector")
    try:
        pub.send(Latent(vector=np.full(DIM, 0.5, np.float32), instruction_id=3))
        assert sub.take(view) and view.int("instruction_id") == 3 and (view.array == 0.5).all()
        assert not sub.take(view)  # nothing new
        pub.send(Latent(vector=np.full(DIM, np.inf, np.float32), instruction_id=4))
        assert not sub.take(view) and sub.dropped["nonfinite"] == 1
        assert view.int("instruction_id") == 3
    finally:
        pub.close()
        sub.close()
        ctx.term()
