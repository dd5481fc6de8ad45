"""The clock exchange of the System 2 link (dualsys/bus/clock.py) and batched encoding.

Fails on the old code: there was no offset estimate (ages were taken from the sender's clock),
and no `encode_batch`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dualsys import config
from dualsys.bus.clock import SHIFT_ENV, ClockSample, OffsetEstimator

S = 1_000_000_000
MS = 1_000_000


def exchange(offset: int, t1: int, up: int, hold: int, down: int) -> tuple[int, ...]:
    """Times of one exchange with a peer whose clock is `offset` ahead of ours."""
    t2 = t1 + up + offset
    t3 = t2 + hold
    t4 = t3 - offset + down
    return t1, t2, t3, t4


@pytest.mark.parametrize("offset", [7200 * S, -7200 * S, 0, 123_456_789])
def test_sample_recovers_the_offset_within_half_the_round_trip(offset: int) -> None:
    s = ClockSample.of(*exchange(offset, 10 * S, up=3 * MS, hold=80 * MS, down=1 * MS))
    assert s.rtt_ns == 4 * MS  # the server's 80 ms hold is not network time
    assert abs(s.offset_ns - offset) <= s.rtt_ns // 2
    assert s.offset_ns - offset == MS  # asymmetric paths: the error is half their difference


def test_estimator_believes_the_lowest_round_trip_and_bounds_the_error() -> None:
    est = OffsetEstimator(window=8)
    off = 7200 * S
    for i, (up, down) in enumerate([(20, 1), (1, 1), (15, 2), (2, 30)]):
        est.add(ClockSample.of(*exchange(off, (i + 1) * S, up * MS, 50 * MS, down * MS)))
    assert est.best.rtt_ns == 2 * MS
    assert est.offset_ns == off and est.uncertainty_ns == MS
    # a latent sent at peer time p arrives here at r: its local send time is p - offset,
    # never later than its arrival
    p = 10 * S + off
    assert est.to_local(p, 10 * S + 5 * MS) == 10 * S
    assert est.to_local(p, 10 * S - 5 * MS) == 10 * S - 5 * MS


def test_estimator_starts_over_when_the_peer_clock_jumps() -> None:
    est = OffsetEstimator()
    for i in range(5):
        est.add(ClockSample.of(*exchange(7200 * S, (i + 1) * S, MS, 50 * MS, MS)))
    est.add(ClockSample.of(*exchange(-7200 * S, 9 * S, 5 * MS, 50 * MS, 5 * MS)))
    assert est.resets == 1 and est.offset_ns == -7200 * S  # not the old, lower-rtt sample


def test_clock_shift_hook_shifts_only_the_process_that_sets_it() -> None:
    code = (
        "import time; from dualsys.bus.clock import mono_ns; print(mono_ns() - time.monotonic_ns())"
    )
    for shift, want in (("7200", 7200 * S), ("-7200", -7200 * S), ("", 0)):
        env = dict(os.environ, **{SHIFT_ENV: shift})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert abs(int(out.stdout) - want) < 50 * MS, out
    bad = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, **{SHIFT_ENV: "2h"}),
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and SHIFT_ENV in bad.stderr


def test_encode_batch_equals_one_encode_per_robot() -> None:
    from dualsys.system2 import encoders

    cfg = config.load_robot("gr1")
    enc = encoders.create(cfg, untrained=True)
    enc.configure()
    cam, rng = cfg.cameras[0], np.random.default_rng(0)
    images = [rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8) for _ in range(3)]
    q0 = cfg.limits()["default"]
    qs = [q0 + 0.01 * i for i in range(3)]
    dqs = [np.zeros_like(q0) for _ in range(3)]
    texts = ["wave the right hand", "raise both arms", "wave the right hand"]
    batch = enc.encode_batch(images, qs, dqs, texts)
    assert batch.vectors.shape == (3, cfg.system2.latent_dim)
    for i in range(3):
        one = enc.encode(images[i], qs[i], dqs[i], texts[i]).vector
        np.testing.assert_allclose(batch.vectors[i], one, atol=2e-4)
    assert not np.allclose(batch.vectors[0], batch.vectors[1])  # each robot its own latent
