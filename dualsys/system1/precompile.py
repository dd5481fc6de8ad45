"""Compile the control process's numba code into numba's on-disk cache (or check it is there).

`python -m dualsys.system1.precompile`: configures a control loop on a scratch run directory,
warms it (every path the live loop and its stop ramp call) and closes it. The test command runs
it before the suite, so no test pays a first compile (several seconds on a fresh clone) inside
a timed section; `dualsys up` does not need it (the control process warms before its loop).
"""

from __future__ import annotations

import sys
import tempfile
import time

import zmq

from dualsys import config
from dualsys.system1.control import ControlLoop


def main() -> int:
    """Warm one control loop of the GR-1 config; prints how long it took."""
    t0 = time.monotonic()
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="dualsys-precompile-") as run_dir:
        loop = ControlLoop(config.load_robot("gr1"), ctx, run_dir)
        loop.configure()
        loop.warm(10)
        loop.close()
    ctx.term()
    print(f"dualsys: control loop code compiled/cached in {time.monotonic() - t0:.1f} s",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
