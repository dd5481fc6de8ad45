"""The latency probe: a cyclictest-style loop per core, run as its own process.

Three forms, best first: `probe.c` compiled at first use with `cc -O2` into the user's cache
(~/.cache/dualsys/doctor/), `cyclictest` from rt-tests when installed, else `pyprobe` (the same
loop in Python; its numbers include the interpreter's own jitter and are labelled so). Every
form reports the same fields: ticks, p50/p99/p999/max wake-up lateness (µs), misses (ticks late
by more than a period), late_half (late by more than half a period) and max_streak.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dualsys.doctor.parse import parse_cyclictest

SOURCE = Path(__file__).with_name("probe.c")
KINDS = ("c", "cyclictest", "python")


def cache_dir() -> Path:
    """Where the compiled probe lives: $XDG_CACHE_HOME/dualsys/doctor (or ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dualsys" / "doctor"


def compile_probe(cc: str | None = None) -> tuple[Path | None, str]:
    """The compiled probe (built once per source version), or (None, why not)."""
    cc = cc or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None, "no C compiler (cc) found"
    try:
        src = SOURCE.read_bytes()
    except OSError:
        return None, f"{SOURCE} missing from the installed package"
    exe = cache_dir() / f"probe-{hashlib.sha256(src).hexdigest()[:12]}"
    if exe.exists():
        return exe, ""
    try:
        exe.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=exe.parent, prefix=".probe-")
        os.close(fd)
    except OSError as exc:
        return None, f"cache dir {exe.parent} not writable ({exc.strerror})"
    r = subprocess.run(
        [cc, "-O2", "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        os.unlink(tmp)
        return None, f"{cc} failed: {r.stderr.strip()[:300]}"
    os.replace(tmp, exe)  # atomic: concurrent first uses both end with a whole binary
    return exe, ""


@dataclass(frozen=True)
class Probe:
    """Which probe form runs, and why the better ones did not."""

    kind: str
    exe: str
    note: str = ""

    def command(
        self, core: int, hz: int, seconds: float, prio: int, work_us: int = 0, spin_us: int = 0
    ) -> list[str]:
        """The argv that runs one probe on `core` at `hz` for `seconds` (prio 0: no FIFO).
        `work_us` / `spin_us` (C probe only): a loop shaped like dualsys's control loop (spin
        before the deadline, busy work after the wake-up; see probe.c)."""
        if self.kind == "c":
            shape = [str(work_us), str(spin_us)] if work_us or spin_us else []
            return [self.exe, str(core), str(hz), f"{seconds:g}", str(prio), *shape]
        if work_us or spin_us:
            raise ValueError(f"the {self.kind} probe has no work/spin shape (C probe only)")
        if self.kind == "cyclictest":
            loops = max(1, round(hz * seconds))
            # -h: histogram up to 100 ms in 1 µs buckets, printed on stdout at the end
            return [self.exe, "-q", "-m", f"-p{prio}", f"-a{core}", "-t1",
                    f"-i{1_000_000 // hz}", f"-l{loops}", "-h100000"]  # fmt: skip
        return [self.exe, "-m", "dualsys.doctor.pyprobe", str(core), str(hz), f"{seconds:g}",
                str(prio)]  # fmt: skip

    def parse(self, stdout: str, core: int, hz: int, prio: int) -> dict:
        """One probe's output -> its result dict."""
        if self.kind == "cyclictest":
            res = parse_cyclictest(stdout, hz)
            res.update(core=core, fifo=prio > 0, fifo_error="")
            return res
        return json.loads(stdout.strip().splitlines()[-1])


def choose(prefer: str | None = None) -> Probe:
    """The best probe available here (or `prefer`, one of KINDS, when it is available)."""
    notes = []
    if prefer in (None, "c"):
        exe, why = compile_probe()
        if exe:
            return Probe("c", str(exe))
        notes.append(f"compiled probe unavailable: {why}")
    if prefer in (None, "cyclictest"):
        ct = shutil.which("cyclictest")
        if ct:
            return Probe("cyclictest", ct, "; ".join(notes))
        notes.append("cyclictest not installed")
    if prefer not in (None, "python") and prefer not in KINDS:
        raise ValueError(f"unknown probe kind {prefer!r}: expected one of {', '.join(KINDS)}")
    notes.append("Python fallback probe: includes the interpreter's jitter (a higher floor)")
    return Probe("python", sys.executable, "; ".join(notes))


def start(
    probe: Probe, core: int, hz: int, seconds: float, prio: int, work_us: int = 0, spin_us: int = 0
) -> subprocess.Popen:
    """Start one probe on `core` (its own process); `finish` collects it. SIGTERM to the
    process ends it early with the ticks measured so far; it gets SIGTERM too if the process
    that started it dies first (a FIFO probe never outlives its caller)."""
    return subprocess.Popen(
        probe.command(core, hz, seconds, prio, work_us, spin_us),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:  # in the child, before exec: PR_SET_PDEATHSIG = SIGTERM
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def finish(
    probe: Probe, proc: subprocess.Popen, core: int, hz: int, prio: int, timeout: float
) -> dict:
    """Wait up to `timeout` s for a started probe; its result (an 'error' key on failure)."""
    try:
        so, se = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"core": core, "hz": hz, "error": "probe timed out"}
    try:
        if proc.returncode != 0:
            raise ValueError(f"exit {proc.returncode}: {se.strip()[-300:]}")
        return probe.parse(so, core, hz, prio)
    except (ValueError, IndexError) as exc:
        return {"core": core, "hz": hz, "error": f"{probe.kind} probe failed: {exc}"}


def run_parallel(
    probe: Probe,
    cores: list[int],
    hz: int,
    seconds: float,
    prio: int,
    work_us: int = 0,
    spin_us: int = 0,
) -> dict[int, dict]:
    """Run one probe per core at the same time; {core: result} (an 'error' key on failure)."""
    procs = {c: start(probe, c, hz, seconds, prio, work_us, spin_us) for c in cores}
    return {c: finish(probe, p, c, hz, prio, seconds * 3 + 30) for c, p in procs.items()}
