"""Every hostile input against one live `dualsys up`, class after class (issue 17, point 9).

`LiveUp` starts a real `dualsys up --headless` in a fresh run directory and waits until it is
ready; `StatusWatch` follows the supervisor's status socket (control ticks and misses, System
2's drop count) as `dualsys status` does. The `run_*` functions each throw one class of input
through a real interface (the `dualsys say` command, a rogue ZeroMQ peer on a bound SUB
socket, a second `dualsys up`, `dualsys status`, `dualsys check`) and return a `ClassResult`
with what the interface answered; `judge_report` then checks the counted drops in the run
report. benchmarks/hostile.py and tests/reliability/test_hostile_live.py both use them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus import Hello, Instruction, Publisher, Stats, Subscriber
from dualsys.config import RobotConfig
from dualsys.supervisor import ROLES, STATUS_SOCKET
from dualsys.testing.hostile_frames import REACHABLE, expected, instruction_refusals, raw_classes

CLI = [sys.executable, "-m", "dualsys.cli"]


@dataclass
class ClassResult:
    """What one hostile class did: sent, the interface's answers, and System 1 meanwhile."""

    name: str
    what: str
    count: int
    outcome: Counter = field(default_factory=Counter)  # "refused:too_long" -> n, ...
    expect: Counter = field(default_factory=Counter)  # for bus drops: reason -> n per link
    ok: bool = True
    note: str = ""
    t0: float = 0.0  # seconds since `up` was ready
    t1: float = 0.0
    ticks: float = 0.0  # control ticks and misses during the class (status socket)
    misses: float = 0.0
    s2_dropped: float = 0.0  # System 2's drops counted during the class (live)


class StatusWatch:
    """The newest status snapshot of a running `dualsys up` (as `dualsys status` reads it)."""

    def __init__(self, run_dir: Path) -> None:
        self.values: dict[str, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(run_dir,), daemon=True)
        self._thread.start()

    def _run(self, run_dir: Path) -> None:
        ctx = zmq.Context()
        sub = Subscriber(ctx, f"ipc://{run_dir}/{STATUS_SOCKET}", (Stats,))
        while not self._stop:
            msg = sub.recv(timeout_ms=200)
            if msg is not None:
                self.values = dict(msg.values)
        sub.close()
        ctx.destroy(0)

    def get(self, key: str) -> float:
        return self.values.get(key, 0.0)

    def settle(self, seconds: float) -> dict[str, float]:
        """Wait `seconds` (status comes at 2 Hz, child stats at the stats rate), then snapshot."""
        time.sleep(seconds)
        return dict(self.values)

    def close(self) -> None:
        self._stop = True
        self._thread.join(3)


class LiveUp:
    """A real `dualsys up --headless`: run dir work/run, logs work/logs, report work/report.json."""

    def __init__(self, work: Path, untrained: bool, ready_timeout_s: float = 240.0) -> None:
        self.run_dir, self.report = work / "run", work / "report.json"
        cmd = [*CLI, "up", "--robot", "gr1", "--headless", "--run-dir", str(self.run_dir)]
        cmd += ["--log-dir", str(work / "logs"), "--report", str(self.report)]
        cmd += ["--untrained"] if untrained else []
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.lines.append(line)
            if not line or "all processes ready" in line:
                break
        if "all processes ready" not in self.lines[-1]:
            self.proc.kill()
            raise RuntimeError("dualsys up did not come up:\n" + "".join(self.lines[-40:]))
        self._reader = threading.Thread(
            target=lambda: [self.lines.append(x) for x in self.proc.stdout], daemon=True
        )
        self._reader.start()
        self.t_ready = time.monotonic()
        self.status = StatusWatch(self.run_dir)

    def since_ready(self) -> float:
        return time.monotonic() - self.t_ready

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGINT (as Ctrl-C), wait for the report; returns up's exit code."""
        self.status.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        return code


def _cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _window(up: LiveUp, name: str, what: str, count: int, pause_s: float) -> ClassResult:
    vals = up.status.values
    res = ClassResult(name, what, count, t0=up.since_ready())
    res.ticks, res.misses = -vals.get("control.ticks", 0.0), -vals.get("control.misses", 0.0)
    res.s2_dropped = vals.get("system2.dropped", 0.0)
    return res


def _close(up: LiveUp, res: ClassResult, pause_s: float) -> ClassResult:
    vals = up.status.settle(pause_s)
    res.t1 = up.since_ready()
    res.ticks += vals.get("control.ticks", 0.0)
    res.misses += vals.get("control.misses", 0.0)
    res.s2_dropped = vals.get("system2.dropped", 0.0) - res.s2_dropped
    if not up.alive():
        res.ok, res.note = False, f"dualsys up died (exit {up.proc.returncode})"
    return res


# ----------------------------------------------------------------------- dualsys say


def say_cases(cfg: RobotConfig) -> list[tuple[str, str, int]]:
    """(what, text, exit code `dualsys say` must give): accepted texts are data, never markup."""
    n = cfg.system2.max_instruction_chars
    return [
        ("rich markup closing tag", "[/] wave [/bold]", 0),
        ("rich markup style", "[bold red]x[/] [link=file:///etc/passwd]touch the red cup", 0),
        ("combining-mark pile", "Z" + "\u0336\u0301\u0489" * 150 + "wave", 0),
        (f"longest allowed ({n} chars)", ("point forward " * 64)[:n], 0),
        ("ANSI escape", "\x1b[2J\x1b[31mred", 2),
        ("ESC and bell", "wave\x1b\x07", 2),
        ("bidi override U+202E", "\u202etouch the blue box", 2),
        (f"one over the limit ({n + 1} chars)", "a" * (n + 1), 2),
        ("empty", "", 2),
    ]


def run_say(up: LiveUp, cfg: RobotConfig, pause_s: float, cases=None) -> ClassResult:
    """Each text through the real `dualsys say`; refused ones must exit 2 naming the reason."""
    cases = cases if cases is not None else say_cases(cfg)
    what = "`dualsys say`: " + "; ".join(c[0] for c in cases)
    res = _window(up, "say", what, len(cases), pause_s)
    bad = []
    for what, text, want in cases:
        p = _cli("say", "--run-dir", str(up.run_dir), "--timeout", "15", text)
        if p.returncode == 0:
            res.outcome["adopted"] += 1
        else:
            why = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "?"
            key = "too_long" if "more than" in why else "empty" if "empty" in why else "not_text"
            res.outcome[f"refused (exit {p.returncode}): {key}"] += 1
        if p.returncode != want:
            bad.append(f"{what}: exit {p.returncode} (want {want}) {p.stderr.strip()[-200:]}")
    res.ok = not bad
    _close(up, res, pause_s)
    if bad:
        res.ok, res.note = False, "; ".join(bad)
    return res


# ----------------------------------------------------------------------- rogue bus peer


def _rogue_pubs(ctx: zmq.Context, cfg: RobotConfig, run_dir: Path, source: str = "rogue"):
    """A PUB connected to each bound SUB a peer can reach, subscriptions already taken in."""
    pubs = {
        t: Publisher(ctx, cfg.endpoint(t, run_dir), source, bind=False, hwm=100_000)
        for t in REACHABLE
    }
    for _ in range(5):  # let each PUB read the SUB's subscription (no warm-up messages)
        time.sleep(0.1)
        for p in pubs.values():
            p.sock.getsockopt(zmq.EVENTS)
    return pubs


def _send_spaced(pub: Publisher, frames, rate_hz: float = 2000.0) -> None:
    for f in frames:
        pub.send_raw(f)
        time.sleep(1.0 / rate_hz)


def run_raw(up: LiveUp, cfg: RobotConfig, per_class: int, pause_s: float) -> list[ClassResult]:
    """Each class of malformed frames on every bound SUB, `per_class` frames per link; each
    frame's expected drop reason is what that link's own decoder says."""
    out = []
    for rc in raw_classes(cfg):
        total = per_class * len(rc.frames)
        res = _window(up, f"bus: {rc.name}", rc.what, total, pause_s)
        ctx = zmq.Context()
        pubs = _rogue_pubs(ctx, cfg, up.run_dir)
        for topic, frames in rc.frames.items():
            picks = [frames[i % len(frames)] for i in range(per_class)]
            res.expect.update(f"{topic}:{expected(cfg, topic, f)}" for f in picks)
            _send_spaced(pubs[topic], picks)
        time.sleep(0.3)  # delivered before LINGER 0 discards the rest
        for p in pubs.values():
            p.close()
        ctx.destroy(0)
        out.append(_close(up, res, pause_s))
    return out


def run_peer_instructions(up: LiveUp, cfg: RobotConfig, repeat: int, pause_s: float) -> ClassResult:
    """Well-formed Instructions a peer sends past `dualsys say` (NUL, ESC, over-long, empty)."""
    cases = instruction_refusals(cfg)
    res = _window(
        up,
        "bus: refused instructions",
        ", ".join(c[0] for c in cases),
        repeat * len(cases),
        pause_s,
    )
    ctx = zmq.Context()
    pub = _rogue_pubs(ctx, cfg, up.run_dir)["instruction"]
    for i in range(repeat):
        for _, text, why in cases:
            pub.send(Instruction(text=text, id=1000 + i))
            res.expect[f"instruction:{why}"] += 1
            time.sleep(0.002)
    time.sleep(0.3)
    pub.close()
    ctx.destroy(0)
    return _close(up, res, pause_s)


def run_rogue_hello(up: LiveUp, cfg: RobotConfig, repeat: int, pause_s: float) -> ClassResult:
    """Hello/Stats claiming every role from this process (wrong pid), a Hello whose handshake
    would fail the run, a Hello whose role is not its source."""
    res = _window(
        up,
        "stats: rogue Hello/Stats",
        "Hello + Stats claiming each role, wrong pid; a failing handshake; role != source",
        0,
        pause_s,
    )
    ctx = zmq.Context()
    ep = cfg.endpoint("stats", up.run_dir)
    pubs = {r: Publisher(ctx, ep, r, bind=False, hwm=100_000) for r in ROLES}
    time.sleep(0.5)
    for p in pubs.values():
        p.sock.getsockopt(zmq.EVENTS)
    fake = 2**31 - 2  # no such process
    d, n = cfg.system2.latent_dim, cfg.n_joints
    for _ in range(repeat):
        for role, p in pubs.items():
            p.send(Hello(role, cfg.name, d, n, fake))
            p.send(Stats(process=role, values={"rate_hz": 1.0, "misses": 1e9}, pid=fake))
            p.send(Hello(role, "evil", 1, 1, fake))
            p.send(Hello("control" if role != "control" else "robot", cfg.name, d, n, fake))
            res.expect["untrusted:wrong_pid"] += 3
            res.expect["untrusted:role_mismatch"] += 1
            time.sleep(0.002)
    res.count = 4 * repeat * len(pubs)
    time.sleep(0.3)
    for p in pubs.values():
        p.close()
    ctx.destroy(0)
    return _close(up, res, pause_s)


def run_random_sources(up: LiveUp, cfg: RobotConfig, count: int, pause_s: float) -> ClassResult:
    """Hello/Stats under `count` random source names (bookkeeping must stay bounded)."""
    res = _window(
        up, "stats: random sources", "Hello/Stats under random source names", count, pause_s
    )
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.endpoint("stats", up.run_dir), "x", bind=False, hwm=100_000)
    time.sleep(0.5)
    pub.sock.getsockopt(zmq.EVENTS)
    rng = np.random.default_rng(5)
    for i in range(count):
        name = rng.bytes(8).hex()
        pub.source = name
        pub.send(
            Stats(process=name, values={name: 1.0})
            if i % 2
            else Hello(name, cfg.name, 1, 1, os.getpid())
        )
        if i % 200 == 199:
            time.sleep(0.02)  # under the supervisor's drain rate: every one is counted
    res.expect["untrusted:unknown_source"] += count
    time.sleep(0.3)
    pub.close()
    ctx.destroy(0)
    return _close(up, res, pause_s)


def _flood(endpoints: list[str], seconds: float, out: mp.Queue) -> None:
    """A rogue peer process: garbage of every class, as fast as it can, on every endpoint."""
    from dualsys import config
    from dualsys.testing.hostile_frames import raw_classes as classes

    cfg = config.load_robot("gr1")
    frames = [
        [f for c in classes(cfg) if c.name != "oversized" for f in c.frames.get(topic, ())]
        for topic in REACHABLE
    ]
    ctx = zmq.Context()
    pubs = [Publisher(ctx, ep, "rogue", bind=False, hwm=100_000) for ep in endpoints]
    time.sleep(0.5)
    sent, t0, i = 0, time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        for p, fs in zip(pubs, frames, strict=True):
            p.send_raw(fs[i % len(fs)])
            sent += 1
        i += 1
    out.put((sent, time.monotonic() - t0))
    time.sleep(0.3)
    for p in pubs:
        p.close()
    ctx.destroy(0)


def run_flood(up: LiveUp, cfg: RobotConfig, seconds: float, pause_s: float) -> ClassResult:
    """Every non-oversized malformed frame as fast as a separate process can send (aim: >= 10k
    msg/s), while `dualsys status --once` attaches; ZeroMQ drops what overflows a queue."""
    res = _window(
        up, "bus: flood", f"all malformed classes for {seconds:g} s, both links", 0, pause_s
    )
    eps = [cfg.endpoint(t, up.run_dir) for t in REACHABLE]
    spawn = mp.get_context("spawn")
    q = spawn.Queue()
    rogue = spawn.Process(target=_flood, args=(eps, seconds, q))
    rogue.start()
    time.sleep(0.5 + seconds / 2)
    status = _cli("status", "--run-dir", str(up.run_dir), "--once", "--timeout", "10")
    sent, secs = q.get(timeout=120)
    rogue.join(10)
    res.count = sent
    res.outcome[f"sent at {sent / secs:,.0f} msg/s"] += 1
    res.outcome[f"status --once exit {status.returncode}"] += 1
    _close(up, res, pause_s)
    if status.returncode != 0:
        res.ok, res.note = False, f"dualsys status failed: {status.stderr[-300:]}"
    return res


# ----------------------------------------------------------------------- processes


def run_second_up(up: LiveUp, pause_s: float) -> ClassResult:
    """A second `dualsys up` on the same run directory: refused naming the holder; the first
    keeps its processes."""
    res = _window(up, "second dualsys up", "same robot, same run directory", 1, pause_s)
    pids = (up.run_dir / "pids.json").read_text()
    p = _cli(
        "up",
        "--robot",
        "gr1",
        "--headless",
        "--run-dir",
        str(up.run_dir),
        "--duration",
        "5",
        "--untrained",
        timeout=120,
    )
    err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    res.outcome[f"refused (exit {p.returncode})"] += 1
    _close(up, res, pause_s)
    named = f"pid {up.proc.pid}" in err
    same = (up.run_dir / "pids.json").read_text() == pids
    if p.returncode == 0 or not named or not same:
        res.ok = False
    res.note = f"{err[:160]!r}; holder named: {named}; first run's processes unchanged: {same}"
    return res


def start_status(up: LiveUp) -> subprocess.Popen:
    """`dualsys status` (the live panel) attached for the whole hostile session."""
    return subprocess.Popen(
        [*CLI, "status", "--run-dir", str(up.run_dir), "--timeout", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_status(proc: subprocess.Popen, up: LiveUp, t0: float) -> ClassResult:
    """Ctrl-C the attached `dualsys status`: it must have stayed up and exit 0."""
    res = ClassResult("dualsys status attached", "live panel for the whole session", 1, t0=t0)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    res.t1 = up.since_ready()
    res.outcome[f"alive through the session: {alive}, exit {code}"] += 1
    res.ok = alive and code == 0
    if not res.ok:
        res.note = proc.stderr.read()[-300:]
    return res


# ----------------------------------------------------------------------- the report


def judge_report(results: list[ClassResult], report: dict) -> dict[str, dict[str, tuple[int, int]]]:
    """Compare what the run report counted with what was sent: per link, reason -> (counted,
    sent and expected under that reason, excluding the flood). Marks classes whose reason was
    not counted as failed."""
    counted = {
        "instruction": {
            k.split(".", 1)[1]: v
            for k, v in report.get("bus", {}).get("dropped", {}).items()
            if k.startswith("instruction.")
        },
        "stats": dict(report.get("stats_dropped", {})),
        "untrusted": dict(report.get("untrusted", {})),
    }
    want: dict[str, Counter] = {k: Counter() for k in counted}
    for r in results:
        for key, n in r.expect.items():
            link, why = key.split(":", 1)
            if why != "zmq_maxmsgsize":
                want[link][why] += n
    table = {
        link: {
            why: (int(counted[link].get(why, 0)), want[link].get(why, 0))
            for why in sorted(set(counted[link]) | set(want[link]))
        }
        for link in counted
    }
    for r in results:
        short = [
            k
            for k, n in r.expect.items()
            if not k.endswith("zmq_maxmsgsize")
            and table[k.split(":")[0]][k.split(":", 1)[1]][0]
            < table[k.split(":")[0]][k.split(":", 1)[1]][1]
        ]
        if short:
            r.ok = False
            r.note += f"; not all counted: {', '.join(short)}"
        for key, n in r.expect.items():
            link, why = key.split(":", 1)
            label = (
                "refused by ZeroMQ (MAXMSGSIZE)"
                if why == "zmq_maxmsgsize"
                else (f"{'untrusted' if link == 'untrusted' else 'dropped'}: {why}")
            )
            where = {"instruction": "System 2", "stats": "supervisor", "untrusted": "supervisor"}
            r.outcome[f"{label} ({where[link]})"] += n
    return table
