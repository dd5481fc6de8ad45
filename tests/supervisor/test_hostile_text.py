"""Issue 17.1: instruction text is data. Whatever text arrives (markup, ANSI escapes, control
characters, bidi overrides, the longest allowed length) renders in the live panel, the headless
line and the run report without an exception, without raw control characters, verbatim where
printable and as visible escapes where not."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from rich.live import Live

from dualsys import config
from dualsys.liveview import INSTRUCTION_CELLS, display_text, headless_line, panel
from dualsys.report import build_report, summary_text, write_report
from dualsys.system2.instruction import validate_instruction

CFG = config.load_robot("gr1")
LONGEST = CFG.system2.max_instruction_chars
#: control characters a terminal would act on (C0 but newline, DEL, C1)
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")

HOSTILE = [
    "[/]",
    "[bold]wave[/bold] [/] [",
    "[link=file:///etc/passwd]touch the cup[/link]",
    "[red on white]raise[/] both arms [/red]",
    "\\[escaped] and a trailing backslash \\",
    "\x1b[2J\x1b[Hcleared the screen",
    "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "\x1b[31mred\x1b[0m \x9b31m C1 CSI \x07 bell \x08 back \r carriage",
    "nul \x00 in the middle",
    "tab\tand\nnew line",
    "\u202egnp.exe right-to-left override",
    "zero\u200bwidth\u200djoiner\ufeff",
    "{0} %s %(x)s $x^2$ \\frac{",
    "日本語で右手を振って 👋🏽 wave",
    "e" + "\u0301" * 4000,
    "w" * 4096,  # the Latent message's own max_len for the instruction
]


def _snap(instruction: str) -> dict:
    return {
        "t": 12.0,
        "instruction": instruction,
        "latent_age_ms": 40.0,
        "events": ["system2 died (exit -9); restart in 0.5 s", instruction],
        "control": {"rate_hz": 200.0, "misses": 0.0, "miss_rate": 0.0},
        "system2": {"rate_hz": 10.0},
        "robot": {"realtime_factor": 1.0},
        "policy": {"chunks": 3.0},
    }


def _render(instruction: str, **console_args) -> str:
    out = io.StringIO()
    Console(file=out, width=140, **console_args).print(panel(CFG, _snap(instruction)))
    return out.getvalue()


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_panel_renders_any_text_as_plain_data(text: str) -> None:
    rendered = _render(text)  # rich raised MarkupError on "[/]" here, killing `dualsys up`
    assert not RAW_CONTROL.search(rendered), repr(rendered)
    shown = display_text(text)
    assert not RAW_CONTROL.search(shown)
    # what is shown is in the panel (rich may wrap it: compare without line breaks/borders)
    flat = re.sub(r"\s+", "", rendered)
    assert re.sub(r"\s+", "", shown)[:40] in flat


def test_markup_and_escapes_are_shown_verbatim() -> None:
    flat = _render("[bold]wave[/bold] [/] [link=x]y[/link]")
    assert "[bold]wave[/bold] [/] [link=x]y[/link]" in flat
    ansi = _render("\x1b[2Jcleared")
    assert "\\x1b[2Jcleared" in ansi
    assert display_text("a\nb\tc\x00d\x9be\u202ef") == "a\\nb\\tc\\x00d\\x9be\\u202ef"


def test_live_refresh_thread_survives_hostile_instruction() -> None:
    """The path that took `dualsys up` down: Live's refresh renders the panel on a terminal."""
    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=True, color_system="truecolor")
    live = Live(panel(CFG, _snap("-")), console=console, auto_refresh=False)
    live.start()
    try:
        for text in HOSTILE:
            live.update(panel(CFG, _snap(text)), refresh=True)
    finally:
        live.stop()
    written = out.getvalue()
    assert "[/]" in written
    assert "\x1b[2J" not in written and "\x07" not in written and "\x9b" not in written


def test_headless_line_has_no_raw_controls_and_bounded_width() -> None:
    for text in HOSTILE:
        line = headless_line(CFG, _snap(text))
        assert not RAW_CONTROL.search(line), repr(line)
        assert "\n" not in line
        assert len(line) < 200 + INSTRUCTION_CELLS
    assert "\\x1b[2J" in headless_line(CFG, _snap("\x1b[2Jx"))


def test_longest_instruction_say_accepts_is_shown_cut_with_ellipsis() -> None:
    for unit in ("w", "日", "👋"):
        text = validate_instruction(unit * LONGEST, LONGEST)  # what `dualsys say` sends
        shown = display_text(text)
        assert shown.endswith("\u2026") and shown.startswith(unit * 10)
        rendered = _render(text)
        assert shown[:20] in rendered
        assert len(headless_line(CFG, _snap(text))) < 200 + INSTRUCTION_CELLS
    # a short accepted one is shown exactly
    text = validate_instruction("[bold]wave[/] the right hand 👋", LONGEST)
    assert display_text(text) == text


def test_report_summary_and_png_take_hostile_text(tmp_path: Path) -> None:
    reason = "handshake with robot failed: robot '\x1b[2J[/]' != 'gr1'\n$\\frac{"
    report = build_report(CFG, tmp_path, 1.0, False, reason, [], extra={"events": HOSTILE})
    text = summary_text(report)
    assert not RAW_CONTROL.search(text.replace("\n", " ")), repr(text)
    assert "\\x1b[2J[/]" in text
    report["untrusted"] = {"wrong_pid": 3}
    assert "ignored untrusted messages {'wrong_pid': 3}" in summary_text(report)
    report["robot_name"] = "gr1 $\\frac{ [/]"  # an unbalanced mathtext formula
    png = write_report(report, tmp_path / "r.json", tmp_path)
    assert png.stat().st_size > 1000
