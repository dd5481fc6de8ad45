"""What a valid instruction is. Used by `dualsys say` before sending and by the service on
every Instruction that arrives on the bus (a refused one is counted; the current one stays).

Imports nothing heavy, so `dualsys say` starts fast.
"""

from __future__ import annotations

import unicodedata

#: Drop reasons of refused instructions (counted by the service as "instruction.<reason>").
REFUSAL_REASONS = ("empty", "too_long", "not_text")


class InstructionError(ValueError):
    """An instruction was refused; `reason` is one of REFUSAL_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(detail)


def validate_instruction(text: object, max_chars: int) -> str:
    """Return the instruction with surrounding whitespace removed, or raise InstructionError.

    Refused: anything that is not a str; text with control characters (other than space, tab
    and newline), unpaired surrogates (undecodable bytes on the command line) or private-use /
    unassigned code points; empty or whitespace-only text; more than `max_chars` characters.
    """
    if not isinstance(text, str):
        raise InstructionError("not_text", f"instruction must be text, got {type(text).__name__}")
    for i, ch in enumerate(text):
        if ch in " \t\n":
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "C":  # Cc control, Cf format, Cs surrogate, Co private use, Cn unassigned
            raise InstructionError(
                "not_text",
                f"instruction is not plain text: character {i} is U+{ord(ch):04X} "
                f"(unicode category {cat})",
            )
    stripped = text.strip()
    if not stripped:
        raise InstructionError("empty", "instruction is empty")
    if len(stripped) > max_chars:
        raise InstructionError(
            "too_long",
            f"instruction has {len(stripped)} characters, more than the {max_chars} allowed "
            "(system2.max_instruction_chars)",
        )
    return stripped
