"""The live status panel of `dualsys up` / `dualsys status` (rich), and the headless line.

Text that came from outside (the instruction, names, events) is data: it reaches the panel as
rich `Text` (never parsed as markup) and passes through `display_text` first, which makes
control characters visible as escapes and bounds the width, so no instruction can restyle,
move the cursor of, or crash the terminal view.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from dualsys.config import RobotConfig

#: Display width (terminal cells) of an instruction in the panel and the headless line.
INSTRUCTION_CELLS = 160
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(ch: str) -> str:
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def display_text(text: object, max_cells: int = INSTRUCTION_CELLS) -> str:
    """`text` made safe to print: every control or format character (Unicode category C:
    C0/C1 controls, ESC, DEL, bidi overrides, zero-width marks, surrogates, private use,
    unassigned) is written as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``), and the
    result is cut with an ellipsis to `max_cells` terminal cells and as many characters (so a
    pile of zero-width combining marks is bounded too). Everything else, brackets and
    backslashes included, is kept verbatim: print the result as plain text, never as markup."""
    s = text if isinstance(text, str) else str(text)
    out: list[str] = []
    cells = chars = 0
    for ch in s:
        piece = _escape(ch) if unicodedata.category(ch)[0] == "C" else ch
        width = cell_len(piece)
        if cells + width > max_cells or chars + len(piece) > max_cells:
            # cut back until the ellipsis fits
            while out and (cells > max_cells - 1 or chars > max_cells - 1):
                last = out.pop()
                cells -= cell_len(last)
                chars -= len(last)
            return "".join(out) + "\u2026"
        out.append(piece)
        cells += width
        chars += len(piece)
    return "".join(out)


def _f(values: dict[str, Any], key: str, fmt: str = "{:.1f}") -> str:
    v = values.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v)


def flat_to_status(values: dict[str, float]) -> dict[str, Any]:
    """Turn the supervisor's flat Stats (role.key -> value) back into the snapshot shape."""
    snap: dict[str, Any] = {"t": values.get("t", 0.0), "latent_age_ms": values.get("latent_age_ms")}
    for key, v in values.items():
        if "." in key:
            role, k = key.split(".", 1)
            snap.setdefault(role, {})[k] = v
    return snap


def panel(cfg: RobotConfig, snap: dict[str, Any]) -> Table:
    """The status table: System 1, System 2, robot, instruction, budgets."""
    b = cfg.budgets
    c, s2, rb, pol = (snap.get(r) or {} for r in ("control", "system2", "robot", "policy"))
    t = Table(
        title=Text(
            f"dualsys up --robot {display_text(cfg.name, 64)}   t = {snap.get('t', 0):.0f} s"
        ),
        title_justify="left",
        show_header=True,
        header_style="bold",
    )
    t.add_column("process")
    t.add_column("rate", justify="right")
    t.add_column("timing", justify="left")
    t.add_column("health", justify="left")
    miss_rate = c.get("miss_rate")
    ok = miss_rate is not None and miss_rate <= b.miss_rate
    miss_style = "green" if ok else "red"
    safe = {0: "run", 1: "HOLD", 2: "DEFAULT POSE"}.get(int(c.get("safe_state", 0) or 0), "?")
    t.add_row(
        "System 1 control",
        f"{_f(c, 'rate_hz', '{:.1f}')} Hz",
        f"lateness p99 {_f(c, 'lateness_p99_us', '{:.0f}')} us, "
        f"work p99 {_f(c, 'work_p99_us', '{:.0f}')} us",
        f"[{miss_style}]misses {_f(c, 'misses', '{:.0f}')} "
        f"({_f(c, 'miss_rate', '{:.3%}')} / budget {b.miss_rate:.2%})[/], "
        f"streak {_f(c, 'max_consecutive_misses', '{:.0f}')}, {safe}",
    )
    t.add_row(
        "System 1 policy",
        f"{_f(pol, 'chunks', '{:.0f}')} chunks",
        f"chunk latency p50 {_f(pol, 'latency_p50_ms')} ms, p99 {_f(pol, 'latency_p99_ms')} ms",
        f"restarts {_f(pol, 'restarts', '{:.0f}')}",
    )
    s2_rate = s2.get("rate_hz")
    in_band = s2_rate is not None and cfg.rates.system2_min_hz <= s2_rate <= 10.1
    t.add_row(
        "System 2",
        f"[{'green' if in_band else 'yellow'}]{_f(s2, 'rate_hz', '{:.2f}')} Hz[/]",
        f"step p50 {_f(s2, 'step_p50_ms')} ms, p99 {_f(s2, 'step_p99_ms')} ms",
        f"latent age {_f(c, 'latent_age_p99_ms', '{:.0f}')} ms p99 "
        f"(budget {b.latent_age_p99_ms:.0f}), restarts {_f(s2, 'restarts', '{:.0f}')}",
    )
    t.add_row(
        "robot (sim)",
        f"RTF {_f(rb, 'realtime_factor', '{:.3f}')}",
        f"render p99 {_f(rb, 'render_ms_p99')} ms, frames {_f(rb, 'frames', '{:.0f}')}",
        f"watchdog trips {_f(rb, 'watchdog_trips', '{:.0f}')}, "
        f"refused {_f(rb, 'commands_refused', '{:.0f}')}",
    )
    instr = display_text(snap.get("instruction") or "-")
    events = "   ".join(display_text(e, 100) for e in snap.get("events") or [])
    t.caption = Text(f'instruction: "{instr}"   {events}')
    return t


def headless_line(cfg: RobotConfig, snap: dict[str, Any]) -> str:
    """One line for --headless mode, printed every few seconds."""
    c, s2, rb = (snap.get(r) or {} for r in ("control", "system2", "robot"))
    return (
        f"[{snap.get('t', 0):6.1f} s] S1 {_f(c, 'rate_hz')} Hz "
        f"lat p99 {_f(c, 'lateness_p99_us', '{:.0f}')} us "
        f"misses {_f(c, 'misses', '{:.0f}')} ({_f(c, 'miss_rate', '{:.3%}')}) | "
        f"S2 {_f(s2, 'rate_hz', '{:.2f}')} Hz step p50 {_f(s2, 'step_p50_ms')} ms | "
        f"latent age {_f(snap, 'latent_age_ms', '{:.0f}')} ms | "
        f"RTF {_f(rb, 'realtime_factor', '{:.3f}')} | "
        f'"{display_text(snap.get("instruction") or "")}"'
    )
