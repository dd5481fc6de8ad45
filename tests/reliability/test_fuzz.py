"""Fuzzing the wire codec and the config loader (hypothesis; a few hundred cases each in CI).

benchmarks/fuzz.py runs the same properties with >= 10,000 cases each.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.reliability.fuzz_cases import any_wire_input, check_codec, check_config, config_mutations

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
