"""Getting the control loop to the machine's floor: idle latency, spin margin, miss causes.

- `IdleLatency` holds ``/dev/cpu_dma_latency`` at 0 for the life of the loop (what cyclictest
  does): the kernel then keeps the loop's core out of deep idle states, so a wake-up does not
  pay an idle exit, and on a VM with the ``haltpoll`` idle driver the vCPU polls instead of
  halting (a halted vCPU is what the host stalls for milliseconds). Closing the file releases
  the request; the kernel releases it too if the process dies.
- `calibrate_margin` measures how late this thread wakes from a plain sleep and derives the
  spin margin from it: sleep until margin before the deadline, spin the rest. The margin is
  capped at a share of the period so the policy process on the same core is never starved.
- `MissAttribution` gives every missed tick a cause: the loop woke late (timer, idle exit or a
  host stall the guest cannot see), its work overran, another task held the core (the
  thread's run-queue delay grew: preemption or RT throttling), or the host took the vCPU
  (steal time grew).
"""

from __future__ import annotations

import os
import struct
import time

import numpy as np

DMA_LATENCY = "/dev/cpu_dma_latency"
#: the spin margin never exceeds this share of the period (the policy shares the core)
MAX_SPIN_SHARE = 0.2
#: nor falls below this: the sleep itself has a few µs of Python around it
MIN_MARGIN_NS = 60_000
CAUSES = ("woke_late", "overran", "preempted", "host")
WOKE_LATE, OVERRAN, PREEMPTED, HOST = range(4)
#: a run-queue delay this large within one baseline window means another task held the core
PREEMPT_NS = 500_000


class IdleLatency:
    """Holds the lowest CPU idle-exit latency the process may ask for, until `release()`."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.note = ""

    def hold(self, value_us: int = 0) -> str:
        """Ask for `value_us` (0: no deep idle states); '' on success or why it was refused."""
        try:
            fd = os.open(DMA_LATENCY, os.O_WRONLY)
        except OSError as exc:
            self.note = f"{DMA_LATENCY} not held: {exc.strerror or exc}"
            return self.note
        try:
            os.write(fd, struct.pack("<i", value_us))
        except OSError as exc:
            os.close(fd)
            self.note = f"{DMA_LATENCY} not held: {exc.strerror or exc}"
            return self.note
        self.fd, self.note = fd, ""
        return ""

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Drop the request (closing the file is how the kernel's PM QoS interface ends it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def margin_cap_ns(period_ns: int, configured_ns: int) -> int:
    """The largest spin margin allowed: the configured one, at most MAX_SPIN_SHARE of a period."""
    return max(0, min(configured_ns, int(period_ns * MAX_SPIN_SHARE)))


def calibrate_margin(period_ns: int, cap_ns: int, samples: int = 200) -> tuple[int, dict]:
    """Measure this thread's oversleep and return (spin margin ns, measurement).

    Sleeps `samples` times for a period's length minus the cap (as the loop does) and takes
    the 99th percentile of how late each sleep returned; the margin covers twice that plus a
    little, capped at `cap_ns`. Run it under the loop's own scheduling (after FIFO).
    """
    from dualsys.system1.rt import AbsoluteSleep

    sleep_to = AbsoluteSleep()  # the loop's own wait
    want = max(period_ns - cap_ns, 100_000)
    over = np.empty(samples, np.int64)
    for i in range(samples):
        target = time.monotonic_ns() + want
        sleep_to(target)
        over[i] = time.monotonic_ns() - target
    p50, p99 = (float(v) for v in np.percentile(over, (50, 99)))
    margin = int(min(cap_ns, max(MIN_MARGIN_NS, 2 * p99 + 30_000)))
    return margin, {
        "oversleep_p50_us": round(p50 / 1000, 1),
        "oversleep_p99_us": round(p99 / 1000, 1),
        "oversleep_max_us": round(float(over.max()) / 1000, 1),
        "margin_us": margin // 1000,
        "cap_us": cap_ns // 1000,
    }


def _steal_ticks(text: str, cpu: int) -> int:
    """Steal time (USER_HZ ticks) of one cpu (all cpus when cpu < 0) from /proc/stat text;
    -1 when absent."""
    tag = f"cpu{cpu} " if cpu >= 0 else "cpu "
    for line in text.splitlines():
        if line.startswith(tag):
            parts = line.split()
            return int(parts[8]) if len(parts) > 8 else -1
    return -1


def _run_delay_ns(text: str) -> int:
    """Run-queue delay (ns) from /proc/thread-self/schedstat text ('cpu_ns delay_ns slices')."""
    parts = text.split()
    return int(parts[1]) if len(parts) > 1 else -1


class MissAttribution:
    """Counts missed ticks per cause (see CAUSES). Open it in the loop's own thread.

    `baseline()` reads the thread's run-queue delay and the core's steal time (~20-40 µs of
    procfs reads: call it every few dozen ticks, after the command is sent); `attribute()`
    runs only on a miss and compares against the last baseline.
    """

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.counts = np.zeros(len(CAUSES), np.int64)
        try:
            self._sched = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._sched = -1
        try:
            self._stat = os.open("/proc/stat", os.O_RDONLY)
        except OSError:
            self._stat = -1
        self.delay0 = self.steal0 = -1
        self.baseline()

    def _read(self) -> tuple[int, int]:
        delay = steal = -1
        if self._sched >= 0:
            delay = _run_delay_ns(os.pread(self._sched, 256, 0).decode())
        if self._stat >= 0:
            steal = _steal_ticks(os.pread(self._stat, 1 << 16, 0).decode(), self.cpu)
        return delay, steal

    def baseline(self) -> None:
        """Remember the current run-queue delay and steal time (bookkeeping, not per tick)."""
        self.delay0, self.steal0 = self._read()

    def attribute(self, late_ns: int, period_ns: int, n: int = 1) -> int:
        """Give `n` missed ticks one cause; returns its index. `late_ns`: wake-up lateness."""
        delay, steal = self._read()
        if delay >= 0 and self.delay0 >= 0 and delay - self.delay0 >= PREEMPT_NS:
            cause = PREEMPTED
        elif steal > self.steal0 >= 0:
            cause = HOST
        elif late_ns >= period_ns // 2:
            cause = WOKE_LATE
        else:
            cause = OVERRAN
        self.counts[cause] += n
        self.delay0, self.steal0 = delay, steal
        return cause

    def as_dict(self) -> dict[str, int]:
        """Misses per cause."""
        return {name: int(c) for name, c in zip(CAUSES, self.counts, strict=True)}

    def close(self) -> None:
        """Close the procfs files."""
        for fd in (self._sched, self._stat):
            if fd >= 0:
                os.close(fd)
        self._sched = self._stat = -1
