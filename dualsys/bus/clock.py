"""Clocks across computers: this host's monotonic clock, and the offset to a peer's.

No age is ever computed from another computer's clock. A robot-side link measures the offset
between its monotonic clock and the System 2 server's the way NTP does, over the messages it
already exchanges: it stamps each input it sends (t1, robot clock); the server echoes, in each
latent, the t1 of the newest input it holds, that input's receive time t2 and the latent's
send time t3 (server clock); the link receives the latent at t4 (robot clock). Then

    offset = ((t2 - t1) + (t3 - t4)) / 2          (server clock - robot clock)
    round trip = (t4 - t1) - (t3 - t2)            (network only: server hold time removed)

and the true offset lies within round trip / 2 of the estimate (the two one-way delays are
unknown, each between 0 and the round trip). `OffsetEstimator` keeps the last samples and
believes the one with the smallest round trip (the least queueing, so the tightest bound).

Test hook: `DUALSYS_CLOCK_SHIFT_S` (seconds, may be negative, read once per process) shifts
`mono_ns()`, so a test can run a System 2 server whose clock is hours ahead of or behind the
robot's on one machine. Only the System 2 server and link code read `mono_ns()`; production
runs leave the variable unset. Imports only the standard library.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass

SHIFT_ENV = "DUALSYS_CLOCK_SHIFT_S"
#: samples the offset filter looks back over (at 10 Hz: 3.2 s)
WINDOW = 32
#: offsets further apart than their uncertainties plus this mean the peer's clock jumped
JUMP_SLACK_NS = 2_000_000


def _read_shift() -> int:
    raw = os.environ.get(SHIFT_ENV, "").strip()
    if not raw:
        return 0
    try:
        return int(float(raw) * 1e9)
    except ValueError:
        raise ValueError(f"{SHIFT_ENV}={raw!r}: expected seconds (a number)") from None


_SHIFT_NS = _read_shift()


def shift_ns() -> int:
    """The test shift of this process's clock (0 unless DUALSYS_CLOCK_SHIFT_S is set)."""
    return _SHIFT_NS


def mono_ns() -> int:
    """This host's monotonic clock in ns, plus the test shift (may be negative under a
    negative shift on a host up for less than it)."""
    return time.monotonic_ns() + _SHIFT_NS


@dataclass(frozen=True)
class ClockSample:
    """One NTP-style exchange: offset (peer - local) and network round trip, ns."""

    offset_ns: int
    rtt_ns: int

    @classmethod
    def of(cls, t1: int, t2: int, t3: int, t4: int) -> ClockSample:
        """t1 local send, t2 peer receive, t3 peer send, t4 local receive."""
        return cls(((t2 - t1) + (t3 - t4)) // 2, max(0, (t4 - t1) - (t3 - t2)))


class OffsetEstimator:
    """Offset of a peer's clock from ours, from the lowest-round-trip sample of a window.

    `offset_ns` is None until a sample arrived. `uncertainty_ns` is half the chosen sample's
    round trip: the true offset lies within it."""

    def __init__(self, window: int = WINDOW) -> None:
        self.samples: deque[ClockSample] = deque(maxlen=window)
        self.best: ClockSample | None = None
        self.count = 0
        self.resets = 0

    def add(self, sample: ClockSample) -> None:
        """Take one sample and re-pick the best of the window (start over on a clock jump)."""
        b = self.best
        if (
            b is not None
            and abs(sample.offset_ns - b.offset_ns)
            > (sample.rtt_ns + b.rtt_ns) // 2 + JUMP_SLACK_NS
        ):
            self.samples.clear()
            self.resets += 1
        self.samples.append(sample)
        self.count += 1
        self.best = min(self.samples, key=lambda s: s.rtt_ns)

    @property
    def offset_ns(self) -> int | None:
        return None if self.best is None else self.best.offset_ns

    @property
    def uncertainty_ns(self) -> int | None:
        return None if self.best is None else self.best.rtt_ns // 2

    def to_local(self, peer_ns: int, received_ns: int) -> int:
        """A peer time on our clock; never later than `received_ns` (the local time the
        message carrying it arrived: it cannot have been sent after that)."""
        off = self.offset_ns or 0
        return min(peer_ns - off, received_ns)
