"""The conditions the probe runs under: a standard load it makes itself, and idle latency held.

`StandardLoad` starts one CPU burner per usable core (pinned, normal priority) and one
memory-streaming process (64 MiB copies, unpinned): what a robot computer's other work looks
like to a real-time loop. `hold_dma_latency` keeps /dev/cpu_dma_latency at 0 µs while open,
which stops the CPUs entering deep idle states (the kernel's PM QoS interface).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

from dualsys.system1.floor import IdleLatency

_BURN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"
_STREAM = "a = bytearray(64 << 20)\nb = bytearray(64 << 20)\nwhile True:\n    b[:] = a\n"


class StandardLoad:
    """One CPU burner per core in `cores` plus one memory streamer, for the `with` block."""

    def __init__(self, cores: list[int]) -> None:
        self.cores = list(cores)
        self.procs: list[subprocess.Popen] = []

    @property
    def description(self) -> str:
        cores = ",".join(map(str, self.cores))
        return (
            f"{len(self.cores)} CPU burner(s) (cores {cores}) + 1 memory streamer (64 MiB copies)"
        )

    def __enter__(self) -> StandardLoad:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        for c in self.cores:
            self.procs.append(subprocess.Popen([sys.executable, "-c", _BURN, str(c)], **quiet))
        self.procs.append(subprocess.Popen([sys.executable, "-c", _STREAM], **quiet))
        time.sleep(0.3)  # let them start and reach their loops before measuring
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


@contextlib.contextmanager
def hold_dma_latency(enabled: bool = True) -> Iterator[str]:
    """Hold /dev/cpu_dma_latency at 0 while inside (as the control loop does: the same
    `IdleLatency`); yields '' when held, else the reason."""
    if not enabled:
        yield "not requested (--no-dma-hold)"
        return
    hold = IdleLatency()
    try:
        yield hold.hold(0)
    finally:
        hold.release()  # the kernel drops the request when the file is closed
