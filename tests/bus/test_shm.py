"""shm:// links: latest value through a shared-memory slot, hostile slot contents dropped and
counted, torn writes never decoded, a waiting reader woken from another process."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

from dualsys.bus import Latent, Publisher, Subscriber, encode
from dualsys.bus.shm import _CAP, _LEN, _MAGIC, _SEQ, HEADER

DIM = 64
SHAPES = {"latent": {"vector": (DIM,)}}


def _latent(step: int) -> Latent:
    return Latent(vector=np.full(DIM, step, np.float32), step=step)


def _pair(tmp_path: Path, capacity: int = 8192) -> tuple[Publisher, Subscriber, str]:
    ep = f"shm://{tmp_path}/run/latent.slot"
    pub = Publisher(None, ep, "s2", max_bytes=capacity)
    sub = Subscriber(None, ep, (Latent,), shapes=SHAPES)
    return pub, sub, ep


def _words(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """Map a slot file the way a hostile writer would: raw header words and data bytes."""
    f = path.open("r+b")
    mm = mmap.mmap(f.fileno(), 0)
    f.close()
    return mm, np.frombuffer(mm, np.uint64, count=8)


def test_latest_value_and_nothing_stale(tmp_path: Path) -> None:
    pub, sub, _ = _pair(tmp_path)
    assert sub.recv_latest() is None
    for i in range(50):
        pub.send(_latent(i))
    msg = sub.recv_latest()
    assert msg is not None and msg.step == 49 and msg.header.source == "s2"
    assert sub.recv_latest() is None and sub.recv_nowait() is None  # read once only
    assert (tmp_path / "run" / "latent.slot").stat().st_mode & 0o077 == 0
    pub.close()
    sub.close()


def test_decoded_arrays_do_not_alias_the_reused_buffer(tmp_path: Path) -> None:
    pub, sub, _ = _pair(tmp_path)
    pub.send(_latent(1))
    first = sub.recv_latest()
    pub.send(_latent(2))  # the reader copies this one into the same buffer
    second = sub.recv_latest()
    assert np.all(first.vector == 1) and np.all(second.vector == 2)


def test_garbage_and_wrong_messages_dropped_and_counted(tmp_path: Path) -> None:
    pub, sub, _ = _pair(tmp_path)
    pub.send_raw(b"\xc1garbage")
    assert sub.recv_latest() is None
    pub.send_raw(encode(Latent(vector=np.zeros(DIM + 1, np.float32)), 1, "x"))
    assert sub.recv_latest() is None
    pub.send_raw(encode(Latent(vector=np.full(DIM, np.nan, np.float32)), 2, "x"))
    assert sub.recv_latest() is None
    assert sub.dropped == {"malformed": 1, "wrong_shape": 1, "nonfinite": 1}
    pub.send(_latent(7))
    assert sub.recv_latest().step == 7 and sub.received == 1


def test_length_beyond_capacity_or_limit_is_not_read(tmp_path: Path) -> None:
    pub, sub, ep = _pair(tmp_path)
    small = Subscriber(None, ep, (Latent,), shapes=SHAPES, max_bytes=64)
    mm, w = _words(tmp_path / "run" / "latent.slot")
    w[_SEQ] += 2
    w[_LEN] = 10**12  # a hostile length: far past the mapping
    assert sub.recv_latest() is None and sub.dropped == {"oversized": 1}
    assert sub.recv_latest() is None and sub.dropped == {"oversized": 1}  # counted once
    pub.send(_latent(3))  # valid, but larger than this reader's 64-byte limit
    assert small.recv_latest() is None and small.dropped["oversized"] >= 1
    assert sub.recv_latest().step == 3
    del w
    mm.close()


def test_write_held_in_progress_is_counted_torn_never_decoded(tmp_path: Path) -> None:
    pub, sub, _ = _pair(tmp_path)
    pub.send(_latent(1))
    mm, w = _words(tmp_path / "run" / "latent.slot")
    w[_SEQ] += 1  # odd: a writer died mid-write
    mm[HEADER : HEADER + 8] = b"\xff" * 8  # and left half a message
    assert sub.recv_latest() is None
    assert sub.dropped == {"torn": 1} and sub.received == 0
    w[_SEQ] += 1
    pub.send(_latent(2))
    assert sub.recv_latest().step == 2
    del w
    mm.close()


def test_not_a_slot_file_is_ignored_then_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run" / "latent.slot"
    path.parent.mkdir()
    path.write_bytes(b"\x00" * 10)  # too small
    ep = f"shm://{path}"
    sub = Subscriber(None, ep, (Latent,), shapes=SHAPES)
    assert sub.recv_latest() is None
    path.write_bytes(b"\x01" * 4096)  # wrong magic
    sub.slot._next_open_ns = 0
    assert sub.recv_latest() is None
    pub = Publisher(None, ep, "s2", max_bytes=8192)  # replaces it
    pub.send(_latent(5))
    sub.slot._next_open_ns = 0
    assert sub.recv_latest().step == 5


def test_restarted_publisher_reaches_mapped_readers(tmp_path: Path) -> None:
    pub, sub, ep = _pair(tmp_path)
    pub.send(_latent(1))
    assert sub.recv_latest().step == 1
    pub.close()
    pub = Publisher(None, ep, "s2", max_bytes=8192)  # same size: the file is reused
    pub.send(_latent(2))
    assert sub.recv_latest().step == 2
    pub.close()
    pub = Publisher(None, ep, "s2", max_bytes=16384)  # another size: old file retired
    pub.send(_latent(3))
    deadline = time.monotonic() + 2
    msg = None
    while msg is None and time.monotonic() < deadline:
        msg = sub.recv_latest()
    assert msg is not None and msg.step == 3
    mm, w = _words(tmp_path / "run" / "latent.slot")
    assert int(w[_MAGIC]) and int(w[_CAP]) == 16384
    del w
    mm.close()


def test_shm_refuses_curve_and_queues(tmp_path: Path) -> None:
    ep = f"shm://{tmp_path}/x.slot"
    with pytest.raises(ValueError, match="latest"):
        Subscriber(None, ep, (Latent,), latest=False)
    with pytest.raises(ValueError, match="CURVE"):
        Publisher(None, ep, "s2", curve=object())


def _hammer(ep: str, seconds: float) -> None:
    """Another process writing as fast as it can: each vector holds its own step number."""
    pub = Publisher(None, ep, "w", max_bytes=8192)
    end = time.monotonic() + seconds
    step = 0
    while time.monotonic() < end:
        step += 1
        pub.send(Latent(vector=np.full(DIM, step, np.float32), step=step))
    pub.close()


def test_concurrent_writer_never_yields_a_torn_message(tmp_path: Path) -> None:
    ep = f"shm://{tmp_path}/run/latent.slot"
    Publisher(None, ep, "w", max_bytes=8192).close()  # the file exists before the reader
    sub = Subscriber(None, ep, (Latent,), shapes=SHAPES)
    proc = mp.get_context("spawn").Process(target=_hammer, args=(ep, 2.0))
    proc.start()
    seen = 0
    while proc.is_alive():
        msg = sub.recv_latest()
        if msg is not None:
            seen += 1
            assert np.all(msg.vector == msg.step), "a torn write was decoded"
    proc.join()
    assert seen > 10 and sub.dropped_total == sub.dropped["torn"]


def _publish_later(ep: str, delay: float) -> None:
    pub = Publisher(None, ep, "s2", max_bytes=8192)
    time.sleep(delay)
    pub.send(_latent(9))
    pub.close()


def test_waiting_reader_is_woken_by_another_process(tmp_path: Path) -> None:
    ep = f"shm://{tmp_path}/run/latent.slot"
    Publisher(None, ep, "s2", max_bytes=8192).close()
    sub = Subscriber(None, ep, (Latent,), shapes=SHAPES)
    proc = mp.get_context("spawn").Process(target=_publish_later, args=(ep, 0.5))
    proc.start()
    msg = sub.recv(5000)
    woke = time.monotonic_ns()
    proc.join()
    assert msg is not None and msg.step == 9
    assert (woke - msg.header.t_mono_ns) / 1e6 < 200  # woken by the write, not a timeout


def test_robot_latent_link_limits_hold_on_a_slot(tmp_path: Path) -> None:
    from dualsys import config
    from dualsys.bus.limits import receive_spec

    cfg = config.load_robot("gr1")
    ep = f"shm://{tmp_path}/run/latent.slot"
    spec = receive_spec(cfg, "latent")
    pub = Publisher(None, ep, "s2", max_bytes=spec["limits"].max_bytes)
    sub = Subscriber(None, ep, (Latent,), **spec)
    dim = cfg.system2.latent_dim
    pub.send(Latent(vector=np.ones(dim, np.float32), instruction="wave", step=4))
    assert sub.recv_latest().step == 4
    pub.send(Latent(vector=np.ones(dim + 1, np.float32)))  # one float too many for this robot
    assert sub.recv_latest() is None and sub.dropped_total == 1
