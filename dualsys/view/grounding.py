"""System 2's grounding of an instruction, shown in the view: the nearest known phrasing and
its behaviour, computed the way System 2 computes it (its text encoder and the robot's phrase
bank, `dualsys.system2.text`), in a background thread of the viewer so the loop never waits.

Off when the robot config names no trained System 2 checkpoint or phrasings, or when the run
is untrained (`dualsys view --no-grounding`, what `up --untrained --view` passes)."""

from __future__ import annotations

import contextlib
import queue
import threading

from dualsys.config import RobotConfig


def _text_side(checkpoint) -> bool:
    """Whether the fusion head reads the sided text input (safetensors metadata)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), "np") as f:
        return (f.metadata() or {}).get("text_side", "0") == "1"


def describe(g) -> str:
    """One line for a Grounding (as System 2 prints it)."""
    line = f"{g.behaviour} (nearest known phrasing {g.phrase!r}, cos {g.cos:.2f})"
    return line + ("; far from every known phrasing" if g.far else "")


class Grounder:
    """Ask with `request(id, text)`; read answers with `results()` (never blocks)."""

    def __init__(self, cfg: RobotConfig) -> None:
        self.cfg = cfg
        self.asks: queue.Queue = queue.Queue(maxsize=8)
        self.answers: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="grounding", daemon=True)
        self.thread.start()

    @staticmethod
    def available(cfg: RobotConfig) -> bool:
        """True when the config gives System 2 a checkpoint and a phrase bank."""
        s2 = cfg.system2
        return (
            s2.checkpoint is not None and s2.phrasings is not None and s2.grounding_temperature > 0
        )

    def request(self, instruction_id: int, text: str) -> None:
        """Ground `text` (dropped when 8 requests already wait)."""
        with contextlib.suppress(queue.Full):
            self.asks.put_nowait((instruction_id, text))

    def results(self) -> list[tuple[int, str, str]]:
        """(instruction id, text, grounding line) answered since the last call."""
        out = []
        while True:
            try:
                out.append(self.answers.get_nowait())
            except queue.Empty:
                return out

    def _run(self) -> None:
        try:
            import torch

            from dualsys.system2.text import TextEncoder, ground_for_robot

            torch.set_num_threads(1)
            text = TextEncoder("cpu")
            bank = ground_for_robot(text, self.cfg, _text_side(self.cfg.system2.checkpoint))
        except Exception as exc:  # the view goes on without grounding; say why once
            self.answers.put((-1, "", f"grounding unavailable: {exc}"))
            return
        while True:
            iid, instr = self.asks.get()
            g = text.grounding(instr) if bank is not None else None
            self.answers.put((iid, instr, describe(g) if g is not None else "no phrase bank"))
