"""Fuzzing the wire codec, the config loader and the receivers (decode, then apply), with
hypothesis; a few hundred cases each in CI.

The receivers are the real components on real (inproc) ZeroMQ sockets: the control loop
(latents, chunks), the policy process (states, latents), System 2 (frames, states,
instructions) and the robot side's command path (safety filter); see fuzz_receivers.py for
what each must guarantee. benchmarks/fuzz.py runs the same properties with >= 10,000 cases
each and tabulates every hostile case class and its outcome.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.fuzz_cases import any_wire_input, check_codec, check_config, config_mutations
from tests.reliability.fuzz_hostile import hostile
from tests.reliability.fuzz_receivers import RIGS

CI = settings(
    max_examples=300,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_TMP = Path(tempfile.mkdtemp(prefix="dualsys-fuzz-"))


@CI
@given(any_wire_input())
def test_decode_raises_only_drop_error(data: bytes) -> None:
    check_codec(data, pin_shapes=False)


@CI
@given(any_wire_input())
def test_decode_with_pinned_shapes_never_passes_a_bad_value(data: bytes) -> None:
    check_codec(data, pin_shapes=True)


@CI
@given(config_mutations())
def test_any_config_mutation_loads_or_names_file_and_key(text: str) -> None:
    check_config(text, _TMP / "fuzzed.toml")


def test_the_fuzzers_start_from_valid_inputs(tmp_path: Path) -> None:
    """Guard the harness: unmutated inputs decode and load (else every case is refused)."""
    from tests.reliability.fuzz_cases import GR1_DATA, SAMPLE_BYTES, dump_toml

    assert check_config(dump_toml(GR1_DATA), tmp_path / "base.toml") == "ok"
    assert all(check_codec(b, pin_shapes=True) == "ok" for b in SAMPLE_BYTES)


RECEIVER_CI = settings(CI, max_examples=200)


@pytest.fixture(scope="module", params=sorted(RIGS))
def rig(request, tmp_path_factory):
    ctx = zmq.Context()
    r = RIGS[request.param](ctx, tmp_path_factory.mktemp(request.param))
    r.outcomes = Counter()
    yield r
    r.close()
    ctx.term()


@RECEIVER_CI
@given(data=st.data())
def test_receiver_survives_hostile_input(rig, data) -> None:
    """Decode then apply: no exception, and the receiver's output properties hold."""
    case = data.draw(st.sampled_from(rig.topics).flatmap(hostile), label="case")
    outcome = rig.feed(case)
    rig.outcomes[(case.klass, outcome)] += 1
    if case.klass == "header_out_of_range" or (
        case.klass == "nonfinite" and case.topic != "instruction"
    ):
        assert outcome.startswith(("dropped:", "refused:")), (case, outcome)
    if case.klass == "oversized":  # ZeroMQ's MAXMSGSIZE may drop it before it is read
        assert outcome in ("dropped:oversized", "not_delivered"), (case, outcome)


def test_receivers_apply_valid_input(rig) -> None:
    """Guard the harness: a valid message reaches the receiver (else every case is refused)."""
    import numpy as np

    from tests.reliability.fuzz_hostile import Case, _base

    rng = np.random.default_rng(0)
    topic = rig.topics[0]
    msg = _base(topic, rng, 1)
    if topic == "camera":
        msg.camera = rig.cfg.cameras[0].name
    case = Case("valid", topic, msg=msg, t0_offset_ns=0 if topic == "chunk" else None)
    assert rig.feed(case) == "accepted"
