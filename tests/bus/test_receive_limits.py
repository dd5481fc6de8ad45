"""Bounded receive work: per-topic limits from the config, msgpack allocation bounds, integer
ranges, and a bound on how many messages one non-blocking receive reads."""

from __future__ import annotations

import time
import tracemalloc

import msgpack
import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus.codec import DropError, decode, encode
from dualsys.bus.limits import receive_spec, topic_limits
from dualsys.bus.messages import (
    ActionChunk,
    Command,
    Instruction,
    Latent,
    RobotState,
    SceneReset,
    Stats,
)
from dualsys.bus.transport import MAX_PER_CALL, MAX_SOURCES, Publisher, Subscriber
from dualsys.system1.wire import CommandEncoder

CFG = config.load_robot("gr1")
N, H, NC = CFG.n_joints, CFG.policy.chunk_horizon, len(CFG.controlled_indices)
D = CFG.system2.latent_dim
LIMITS = topic_limits(CFG)


def _chunk(**kw) -> ActionChunk:
    fields = {"actions": np.zeros((H, NC), np.float32), "t0_mono_ns": 5, "dt_ns": 20_000_000}
    return ActionChunk(**{**fields, **kw})


def test_latent_and_chunk_limits_are_a_few_kib_not_the_8_mib_default() -> None:
    for topic in ("latent", "chunk", "state", "command"):
        assert LIMITS[topic].max_bytes <= 8 * 1024, (topic, LIMITS[topic])
    cam = CFG.cameras[0]
    assert LIMITS["camera"].max_bytes < cam.width * cam.height * 3 + 2048


def test_the_largest_valid_message_of_each_topic_fits_its_limits() -> None:
    longest = "\U0001f600" * CFG.system2.max_instruction_chars  # 4 UTF-8 bytes a character
    big = 2**63 - 1
    cases = {
        "latent": Latent(vector=np.zeros(D, np.float64), instruction=longest, step=big),
        "chunk": ActionChunk(np.zeros((H, NC)), big // 2, 1, big, big, H, big),
        "state": RobotState(np.zeros(N), np.zeros(N), np.zeros(N), 1.0, "x" * 32),
        "instruction": Instruction(text="\U0001f600" * 4096, id=big),
    }
    for topic, msg in cases.items():
        data = encode(msg, big, "\U0001f600" * 128, big)
        spec = receive_spec(CFG, topic)
        assert decode(data, shapes=spec["shapes"], limits=spec["limits"]).TYPE == msg.TYPE
    # the control loop's preallocated command frames
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://limits-cmd")
    b.connect("inproc://limits-cmd")
    CommandEncoder(a, N, "control").send(np.zeros(N), np.zeros(N), "hold", big, big, big, big)
    spec = receive_spec(CFG, "command")
    assert decode(b.recv(), (Command,), **spec).tick == big
    a.close(0)
    b.close(0)
    ctx.term()


def test_a_small_message_cannot_claim_a_large_allocation() -> None:
    """1 MiB of nils as an array field: before, msgpack built an 8 MB list first; the array,
    map and string length bounds refuse it while reading its header."""
    body = {"vector": [None] * 1_000_000}
    data = msgpack.packb(["latent", 1, 1, 1, 1, "x", body])
    assert len(data) < 1_100_000
    tracemalloc.start()
    try:
        with pytest.raises(DropError) as info:
            decode(data)  # the default limits (8 MiB messages)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "oversized"
    assert peak < 256 * 1024, f"decode allocated {peak} bytes"


@pytest.mark.parametrize(
    "data",
    [
        b"\x97" + b"\x91" * 900 + b"\xc0",  # deeply nested lists
        msgpack.packb(["latent", 1, 1, 1, 1, "x", {"vector": {"a": {"b": {"c": 1}}}}]),
        msgpack.packb(["latent", 1, 1, 1, 1, "x", {"vector": [[1]]}]),
    ],
    ids=["list-depth-900", "map-depth-4", "list-in-list"],
)
def test_nesting_deeper_than_any_message_is_refused(data: bytes) -> None:
    with pytest.raises(DropError) as info:
        decode(data)
    assert info.value.reason == "malformed" and "nested" in info.value.detail


def test_array_header_with_huge_rank_or_shape_is_refused() -> None:
    import struct

    def ext(shape):
        head = struct.pack(f"<B3sB{len(shape)}I", 3, b"<f4", len(shape), *shape)
        return msgpack.ExtType(1, head + b"\x00" * 8)

    for shape, reason in (((1,) * 200, "wrong_shape"), ((2**32 - 1,) * 4, "truncated")):
        data = msgpack.packb(["latent", 1, 1, 1, 1, "x", {"vector": ext(shape)}])
        with pytest.raises(DropError) as info:
            decode(data)
        assert info.value.reason == reason


OUT_OF_RANGE = {
    "chunk-t0-uint64": encode(_chunk(t0_mono_ns=2**64 - 1), 1, "p"),
    "chunk-t0-over-int64": encode(_chunk(t0_mono_ns=2**63), 1, "p"),
    "chunk-end-overflows": encode(_chunk(t0_mono_ns=2**63 - 10, dt_ns=10**6), 1, "p"),
    "chunk-dt-zero": encode(_chunk(dt_ns=0), 1, "p"),
    "chunk-dt-negative": encode(_chunk(dt_ns=-5), 1, "p"),
    "chunk-frozen-past-end": encode(_chunk(frozen=H + 1), 1, "p"),
    "chunk-latency-negative": encode(_chunk(latency_ns=-1), 1, "p"),
    "latent-id-uint64": encode(
        Latent(vector=np.zeros(D, np.float32), instruction_id=2**64 - 1), 1, "s"
    ),
    "latent-frame-time-negative": encode(Latent(vector=np.zeros(D), frame_t_mono_ns=-1), 1, "s"),
    "scene-seed-negative": encode(SceneReset(seed=-1), 1, "e"),
    "command-tick-uint64": encode(Command(q=np.zeros(N), dq=np.zeros(N), tick=2**64 - 1), 1, "c"),
    "header-seq-uint64": encode(Latent(vector=np.zeros(D)), 2**64 - 1, "s"),
    "header-mono-over-int64": encode(Latent(vector=np.zeros(D)), 1, "s", 2**63),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE), ids=list(OUT_OF_RANGE))
def test_integers_outside_the_receivers_range_are_dropped_as_out_of_range(case: str) -> None:
    with pytest.raises(DropError) as info:
        decode(OUT_OF_RANGE[case])
    assert info.value.reason == "out_of_range", info.value


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)  # closes what a failed test left open


def _flood(ctx, tmp_path, frames: list[bytes]) -> tuple[Publisher, Subscriber]:
    ep = f"ipc://{tmp_path}/flood.sock"
    pub = Publisher(ctx, ep, "peer", hwm=10_000)
    sub = Subscriber(ctx, ep, (Latent,), latest=False, hwm=10_000)
    time.sleep(0.3)
    for f in frames:
        pub.send_raw(f)
    deadline = time.monotonic() + 5
    while sub.sock.poll(0) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the rest of the flood arrives
    return pub, sub


def test_a_flood_of_bad_messages_cannot_stall_recv_nowait(ctx, tmp_path) -> None:
    pub, sub = _flood(ctx, tmp_path, [b"\xc1garbage"] * 1000)
    assert sub.recv_nowait() is None
    assert sub.dropped_total == MAX_PER_CALL  # before: the whole flood, in one call
    pub.close()
    sub.close()


def test_recv_latest_reads_at_most_max_msgs(ctx, tmp_path) -> None:
    frame = encode(Latent(vector=np.zeros(4, np.float32)), 1, "peer")
    pub, sub = _flood(ctx, tmp_path, [frame] * 1000)
    assert sub.recv_latest(max_msgs=10) is not None
    assert sub.received == 10
    assert sub.recv_latest() is not None and sub.received == 10 + MAX_PER_CALL
    pub.close()
    sub.close()


def test_sequence_bookkeeping_is_bounded_per_source():
    """A flood of made-up source names cannot grow the subscriber's per-source seq map."""
    ctx = zmq.Context()
    sub = Subscriber(ctx, "inproc://seq-bound", (Stats,), bind=True, latest=False)
    try:
        for i in range(10 * MAX_SOURCES):
            sub._accept(encode(Stats(process="x", values={}), 1, f"src-{i}"))
        assert len(sub._last_seq) == MAX_SOURCES
        assert sub.untracked_sources == 9 * MAX_SOURCES
        assert sub.received == 10 * MAX_SOURCES  # still delivered, only not seq-tracked
    finally:
        sub.close()
        ctx.term()
