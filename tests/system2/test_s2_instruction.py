"""Instruction validation and `dualsys say` errors (no service needed)."""

from __future__ import annotations

import time

import pytest

from dualsys import cli, config
from dualsys.system2.instruction import InstructionError, validate_instruction

CFG = config.load_robot("gr1")
MAX = CFG.system2.max_instruction_chars


def test_valid_instruction_is_stripped() -> None:
    assert validate_instruction("  wave with the right hand\n", MAX) == "wave with the right hand"
    assert validate_instruction("x" * MAX, MAX) == "x" * MAX
    assert validate_instruction("winke mit der Hand 👋", MAX) == "winke mit der Hand 👋"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * (MAX + 1), "too_long"),
        ("wave\x00", "not_text"),
        ("wave \x1b[31m red", "not_text"),
        ("bad \udcff bytes", "not_text"),  # undecodable argv byte (surrogateescape)
        ("rtl \u202e override", "not_text"),
        (b"wave", "not_text"),
        (42, "not_text"),
        (None, "not_text"),
    ],
)
def test_bad_instruction_is_refused(text: object, reason: str) -> None:
    with pytest.raises(InstructionError) as err:
        validate_instruction(text, MAX)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([""], "empty"),
        (["   "], "empty"),
        (["x" * (MAX + 1)], f"more than the {MAX} allowed"),
        (["wave\x07now"], "not plain text"),
    ],
)
def test_say_refuses_bad_input_with_exit_2(argv, needle, tmp_path, capsys) -> None:
    t0 = time.monotonic()
    rc = cli.main(["say", *argv, "--run-dir", str(tmp_path), "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "dualsys say: error:" in err and needle in err
    assert time.monotonic() - t0 < 1.0  # refused before sending, not after waiting


def test_say_without_a_running_system2_times_out_with_exit_1(tmp_path, capsys) -> None:
    rc = cli.main(["say", "wave", "--run-dir", str(tmp_path), "--timeout", "0.3"])
    assert rc == 1
    assert "no System 2 adopted" in capsys.readouterr().err


def test_say_rejects_an_unknown_robot(tmp_path, capsys) -> None:
    assert cli.main(["say", "wave", "--robot", "gr2", "--run-dir", str(tmp_path)]) == 2
    assert "did you mean" in capsys.readouterr().err
