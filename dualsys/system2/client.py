"""Talking to a running System 2 from outside: send an instruction, wait until it is adopted.

A PUB socket that has just connected loses what it sends until the subscription reaches it
(ZeroMQ's slow joiner), so the instruction is re-sent every `resend_s` (same id: the service
ignores repeats) until a Latent carrying its id comes back on the latent topic, or the timeout.
Imports no torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from dualsys.bus import Instruction, Latent, Publisher, Subscriber
from dualsys.bus.curve import BusSecurity
from dualsys.config import RobotConfig
from dualsys.system2.instruction import validate_instruction


def new_instruction_id() -> int:
    """A fresh instruction id: microseconds since the epoch (exact in a float64 Stats value)."""
    return time.time_ns() // 1000


def send_instruction(
    cfg: RobotConfig,
    run_dir: Path,
    text: object,
    *,
    timeout_s: float = 3.0,
    resend_s: float = 0.2,
    source: str = "say",
) -> tuple[int, Latent | None]:
    """Validate and send `text`; return (id, first Latent computed with it, or None on timeout).

    Raises InstructionError (before sending anything) for empty, over-long or non-text input.
    """
    clean = validate_instruction(text, cfg.system2.max_instruction_chars)
    ident = new_instruction_id()
    ctx = zmq.Context()
    try:  # CURVE client keys on tcp:// links when configured (checked before any socket)
        sec = BusSecurity(ctx, cfg, role="operator", binds=False)
    except Exception:
        ctx.term()
        raise
    ep_in, ep_lat = cfg.endpoint("instruction", run_dir), cfg.endpoint("latent", run_dir)
    pub = Publisher(ctx, ep_in, source, bind=False, curve=sec.curve(ep_in, bind=False))
    sub = Subscriber(ctx, ep_lat, (Latent,), latest=True, curve=sec.curve(ep_lat, bind=False))
    try:
        deadline = time.monotonic() + timeout_s
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                pub.send(Instruction(text=clean, id=ident))
                next_send = now + resend_s
            msg = sub.recv(timeout_ms=50)
            if msg is not None and msg.instruction_id == ident:
                return ident, msg
        return ident, None
    finally:
        pub.close()
        sub.close()
        ctx.term()
