"""The latent link on the robot computer: ZeroMQ for every reader, a shm slot for System 1.

Whatever provides latents on the robot computer (System 2, or the link to a remote System 2
server) publishes each latent on the `latent` ZeroMQ PUB as always, so the recorder, the
supervisor, `dualsys say` and remote peers keep receiving every one. When `[endpoints]
latent_local` names a shm:// slot and the `latent` link is same-machine (ipc://), it also
writes the same message (same seq and time) into the slot (dualsys/bus/shm.py): the control
and policy processes read it there without ZeroMQ's three thread wake-ups per message.

A reader takes latents from the slot once the slot has delivered a valid one (the publisher
writes it: System 2 is on this computer) and from ZeroMQ until then, so a peer that
publishes on ZeroMQ only (a tool, a test) is still heard. Both paths decode and validate
alike; a bad slot message is dropped and counted by the slot's Subscriber.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zmq

from dualsys.bus.limits import receive_spec, topic_limits
from dualsys.bus.messages import Latent
from dualsys.bus.transport import Publisher, Subscriber, is_shm

if TYPE_CHECKING:
    from dualsys.bus.curve import BusSecurity
    from dualsys.config import RobotConfig

#: the `[endpoints]` key of the slot, and the ZeroMQ link it mirrors
SLOT_KEY, MIRRORS = "latent_local", "latent"
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def slot_endpoint(cfg: RobotConfig, run_dir: str | Path) -> str | None:
    """The latent slot's shm:// endpoint, or None when none is configured or the latent link
    is not same-machine (ipc://)."""
    if SLOT_KEY not in cfg.endpoints:
        return None
    ep = cfg.endpoint(SLOT_KEY, run_dir)
    if not is_shm(ep) or not cfg.endpoint(MIRRORS, run_dir).startswith("ipc://"):
        return None
    return ep


class LatentOut:
    """Publishes each latent on the ZeroMQ latent link and, when configured, into the slot."""

    def __init__(
        self, ctx: zmq.Context, cfg: RobotConfig, run_dir: str | Path, sec: BusSecurity, role: str
    ) -> None:
        ep = cfg.endpoint(MIRRORS, run_dir)
        self.pub = Publisher(ctx, ep, role, hwm=4, curve=sec.curve(ep, bind=True))
        slot = slot_endpoint(cfg, run_dir)
        self.slot = (
            None
            if slot is None
            else Publisher(ctx, slot, role, max_bytes=topic_limits(cfg)[SLOT_KEY].max_bytes)
        )

    def send(self, msg: Latent, t_mono_ns: int) -> bool:
        """Send on ZeroMQ and write the slot with the same time; False when ZeroMQ dropped it.
        The slot first: its readers are the latency-critical ones."""
        if self.slot is not None:
            self.slot.send(msg, t_mono_ns)
        return self.pub.send(msg, t_mono_ns)

    @property
    def sent(self) -> int:
        """Latents sent on ZeroMQ."""
        return self.pub.sent

    @property
    def slot_sent(self) -> int:
        """Latents written into the slot (0 without one)."""
        return 0 if self.slot is None else self.slot.sent

    def close(self) -> None:
        """Close the socket and unmap the slot (its file stays for the run directory)."""
        self.pub.close()
        if self.slot is not None:
            self.slot.close()


class LatentIn:
    """System 1's latent input: the slot once it has delivered, else the ZeroMQ subscriber.

    `take` never blocks and makes no message object: the newest valid latent's header and
    fields land in `view` (`dualsys.bus.fastcodec.MessageView`: `seq`, `t_mono_ns`,
    `int("instruction_id")`, the vector in `view.array`), validated by compiled code. Once the
    slot is open it allocates only what a message the compiled check leaves to the codec
    needs; before the publisher has made the slot file, the slot reader retries opening it
    every 0.1 s. Safe in the 200 Hz thread. `via` counts the latents taken per path ("shm",
    "zmq")."""

    def __init__(
        self, ctx: zmq.Context, cfg: RobotConfig, zmq_sub: Subscriber, run_dir: str | Path
    ) -> None:
        self.zmq = zmq_sub
        self._sock = zmq_sub.sock
        slot = slot_endpoint(cfg, run_dir)
        spec = receive_spec(cfg, SLOT_KEY)  # the latent's shapes and size limits
        self.slot = None if slot is None else Subscriber(ctx, slot, (Latent,), **spec)
        self.view = zmq_sub.view(Latent, "vector")
        self.shm_taken = 0
        self.zmq_taken = 0

    def take(self) -> bool:
        """Store the newest valid latent not yet taken into `view`; False when none is new
        (200 Hz thread)."""
        slot = self.slot
        if slot is not None:
            if slot.take(self.view):
                self.shm_taken += 1
                return True
            if slot.received:  # the slot is live: ZeroMQ carries the same latents later
                return False
        if self._sock.getsockopt(_EVENTS) & _POLLIN and self.zmq.take(self.view):
            self.zmq_taken += 1
            return True
        return False

    def take_left(self, buf: np.ndarray, n: int) -> bool:
        """Store the latent buf[:n] that compiled code received from ZeroMQ and left to the
        codec (dualsys.system1.tick): the codec decides and counts, as for `take`."""
        if self.zmq.take_bytes(self.view, buf, n):
            self.zmq_taken += 1
            return True
        return False

    def probe(self) -> tuple[int, int, int, int, int]:
        """Where a new latent would show, for the compiled tick's pending check: (has a slot,
        the slot's `SlotReader.probe` triple, the slot is live). Live: it has delivered, so
        ZeroMQ is not read (see `recv_latest`)."""
        slot = self.slot
        if slot is None:
            return 0, 0, 0, 0, 0
        return (1, *slot.slot.probe(), int(slot.received > 0))

    @property
    def via(self) -> dict[str, int]:
        """Latents taken per path, for the run summary."""
        return {"shm": self.shm_taken, "zmq": self.zmq_taken}

    def close(self) -> None:
        """Unmap the slot (the ZeroMQ subscriber belongs to the caller)."""
        if self.slot is not None:
            self.slot.close()


__all__ = ["MIRRORS", "SLOT_KEY", "LatentIn", "LatentOut", "slot_endpoint"]
