"""The supervisor behind `dualsys up`: starts, pins, watches, restarts and stops every process.

Order of start: robot, System 2, policy, control (each a `dualsys` subcommand in its own
process). A process is ready when its Hello arrives on the stats link and agrees with the robot
config (robot name, latent size, joint count; the codec already refuses other schema versions).
A start-up can be cut short at any moment by the `should_stop` predicate (up's Ctrl-C).

Trust: the supervisor believes only its children. A Hello counts only if its header source,
its role and its pid are those of the process started for that role; a Stats only when its
pid is that process's and that process has said Hello that way. Anything else is dropped and
counted in `untrusted` by reason (shown in the run report); bookkeeping per source is fixed in
size, and one poll reads at most MAX_DRAIN stats messages, so a flood cannot starve it. One run
owns its run directory (rundir.RunLock), so a second `dualsys up` there is refused. Limit: a
pid is a claim, not a kernel credential; a peer that can reach the link (the run directory is
owner-only; tcp links take CURVE with a `stats` role key) and copies a child's pid and source
is not told apart.

Failure policy: System 2 or the policy process dies -> restarted with backoff while the control
loop carries on (it degrades on latent age / holds without chunks); the backoff starts over once
a process has stayed up for `UpOptions.healthy_after_s`. The control process or the robot dies
-> everything stops, non-zero exit, the reason printed.

Shutdown: System 2 first, then control (ramps the robot to hold), policy, robot (damps); every
child gets SIGTERM, then SIGKILL if it is still there; all are reaped within 5 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from dualsys.bus import Hello, Latent, Publisher, Stats, Subscriber
from dualsys.bus.curve import BusSecurity
from dualsys.bus.limits import receive_spec
from dualsys.config import RobotConfig
from dualsys.rundir import SUMMARIES, RunLock, make_run_dir, remove_links

ROLES = ("robot", "system2", "policy", "control")
#: Roles whose death is survivable: restarted with backoff.
RESTARTABLE = ("system2", "policy")
#: Shutdown stages and the share of the remaining time each may take.
STOP_STAGES = (
    (("system2", "viewer"), 0.3),
    (("control", "policy"), 0.5),
    (("robot",), 0.8),
    (("recorder",), 1.0),  # last: it records the hold ramp and the robot's last states
)
STATUS_SOCKET = "status.sock"
#: Most stats-link messages one poll reads (the rest wait for the next poll, 50 ms later).
MAX_DRAIN = 256
#: Restart backoff: first delay, cap (seconds); it doubles per restart in a row.
BACKOFF_S = (0.5, 8.0)
#: How many supervisor events (restarts, kills) are kept for the view and the report.
MAX_EVENTS = 200
_PR_SET_PDEATHSIG = 1


class SupervisorError(RuntimeError):
    """The system could not be brought up or had to stop; the message says why."""


class StartInterruptedError(SupervisorError):
    """start() was cut short by the should_stop predicate (a stop signal during start-up)."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One supervised process and its bookkeeping."""

    role: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    ready: bool = False
    restarts: int = 0
    backoff_level: int = 0  # restarts in a row without a healthy period between them
    next_start: float = 0.0
    started_at: float = 0.0  # monotonic time of the last spawn
    exit_codes: deque[int] = field(default_factory=lambda: deque(maxlen=20))
    stats: dict[str, float] = field(default_factory=dict)
    stats_t: float = 0.0
    hello_pid: int = 0  # pid of a Hello that matched this role's process (0: none yet)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class UpOptions:
    """What `dualsys up` was asked to do."""

    untrained: bool = False
    fifo: bool = True
    record: Path | None = None
    #: start the web viewer (role "viewer", `dualsys view`) with these extra arguments
    view: list[str] | None = None
    ready_timeout_s: float = 120.0
    log_dir: Path | None = None
    #: a remote System 2 server (tcp://HOST:PORT): the "system2" role runs the robot-side
    #: link (dualsys/system2/link.py) instead of a local System 2
    system2_server: str = ""
    #: a restarted process that stays up this long has its restart backoff start over
    healthy_after_s: float = 30.0


class Supervisor:
    """Runs one robot's processes. Use: start(); then poll() regularly; finally stop().

    `should_stop`: checked while start() waits for the processes; when it returns True the
    start-up ends at once with StartInterruptedError (up sets it from its SIGINT/SIGTERM handler).
    """

    def __init__(
        self,
        cfg: RobotConfig,
        run_dir: Path,
        opts: UpOptions | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.opts = cfg, Path(run_dir), opts or UpOptions()
        self.should_stop = should_stop or (lambda: False)
        self.children: dict[str, Child] = {}
        self.failure: str = ""
        self.events: deque[str] = deque(maxlen=MAX_EVENTS)
        self.instruction = ""
        self.latent_age_ms = float("nan")
        self.latent_age_max_ms = 0.0  # worst age seen since the last status()
        #: stats-link messages not believed, by reason (unknown_source, wrong_pid, ...)
        self.untrusted: Counter[str] = Counter()
        self.stats_before_hello = 0  # Stats from a child's source before its Hello (dropped)
        self.t_start = 0.0
        self.ctx: zmq.Context | None = None
        self.lock: RunLock | None = None

    # ------------------------------------------------------------------ start-up

    def _argv(self, role: str) -> list[str]:
        base = [sys.executable, "-m", "dualsys.cli"]
        common = ["--robot", str(self.cfg.path), "--run-dir", str(self.run_dir)]
        if role == "robot":
            return [*base, "sim", *common] + ([] if self.opts.fifo else ["--no-rt"])
        if role == "system2" and self.opts.system2_server:
            return [*base, "system2", "link", *common, "--server", self.opts.system2_server]
        if role == "system2":
            return [*base, "system2", *common] + (["--untrained"] if self.opts.untrained else [])
        if role == "policy":
            extra = ["--untrained-policy"] if self.opts.untrained else []
            return [*base, "system1", "policy", *common, *extra]
        if role == "control":
            return [*base, "system1", "control", *common] + (
                [] if self.opts.fifo else ["--no-fifo"]
            )
        if role == "recorder":
            return [*base, "record", *common, "--out", str(self.opts.record)]
        if role == "viewer":
            return [*base, "view", *common, *(self.opts.view or [])]
        raise ValueError(role)

    def _spawn(self, child: Child) -> None:
        env = dict(os.environ, DUALSYS_SUPERVISED="1")
        env.setdefault("MUJOCO_GL", "egl")
        log = None
        if self.opts.log_dir is not None:
            log = open(self.opts.log_dir / f"{child.role}.log", "ab")  # noqa: SIM115
        child.proc = subprocess.Popen(
            child.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log or None,
            stderr=subprocess.STDOUT if log else None,
            preexec_fn=_die_with_parent,
        )
        if log is not None:
            log.close()
        child.ready = False
        child.hello_pid = 0
        child.started_at = time.monotonic()
        self._write_pids()

    def _write_pids(self) -> None:
        """{run_dir}/pids.json: role -> pid of every live child (for tools and tests)."""
        pids = {r: c.proc.pid for r, c in self.children.items() if c.proc is not None}
        pids["supervisor"] = os.getpid()
        (self.run_dir / "pids.json").write_text(json.dumps(pids) + "\n")

    def start(self) -> None:
        """Take the run directory, open the stats link, start every process and wait until all
        are ready. Raises RunDirError (nothing touched) if the directory is foreign or another
        run holds it, SupervisorError if a process fails to come up, StartInterruptedError if
        `should_stop` turned true."""
        make_run_dir(self.run_dir)
        self.lock = RunLock(self.run_dir)  # refuses while another run owns the directory
        for name in SUMMARIES:  # the last run's summaries
            (self.run_dir / f"{name}.json").unlink(missing_ok=True)
        # a crashed run's sockets and slots: a reused slot would still hold its last latent
        remove_links(self.run_dir)
        self._open_links()
        roles = list(ROLES) + (["recorder"] if self.opts.record else [])
        roles += ["viewer"] if self.opts.view is not None else []
        for role in roles:
            self.children[role] = Child(role, self._argv(role))
        self.t_start = time.monotonic()
        # Dependency order: the recorder first (it records from the first message), the robot
        # (state, frames), System 2 until its latents flow, then System 1 — so the control loop
        # never starts on a gap in its inputs.
        if "recorder" in self.children:
            self._spawn(self.children["recorder"])
            self._wait_ready(("recorder",))
        if "viewer" in self.children:  # its start-up (model, viewer server) before System 2's
            self._spawn(self.children["viewer"])
            self._wait_ready(("viewer",))
        self._spawn(self.children["robot"])
        self._wait_ready(("robot",))
        self._spawn(self.children["system2"])
        # a remote server may start later: System 1 then holds until the link brings latents
        self._wait_ready(("system2",), need_latent=not self.opts.system2_server)
        for role in roles:
            if self.children[role].proc is None:
                self._spawn(self.children[role])
        self._wait_ready(tuple(roles))

    def _open_links(self) -> None:
        """The stats link (bound), the latent subscription and the status publisher."""
        self.ctx = zmq.Context()
        self.sec = BusSecurity(self.ctx, self.cfg)  # CURVE on tcp:// links when configured
        ep_stats, ep_latent = (self.cfg.endpoint(n, self.run_dir) for n in ("stats", "latent"))
        self.stats = Subscriber(
            self.ctx,
            ep_stats,
            (Hello, Stats),
            bind=True,
            latest=False,
            hwm=10_000,
            curve=self.sec.curve(ep_stats, bind=True),
            **receive_spec(self.cfg, "stats"),
        )
        self.latent = Subscriber(
            self.ctx,
            ep_latent,
            (Latent,),
            curve=self.sec.curve(ep_latent, bind=False),
            **receive_spec(self.cfg, "latent"),
        )
        self.status_pub = Publisher(
            self.ctx, f"ipc://{self.run_dir}/{STATUS_SOCKET}", "supervisor", hwm=8
        )

    def _wait_ready(self, roles: tuple[str, ...], need_latent: bool = False) -> None:
        deadline = time.monotonic() + self.opts.ready_timeout_s
        while not all(self.children[r].ready for r in roles) or (
            need_latent and self.latent.recv_latest() is None and self.latent.last is None
        ):
            if self.should_stop():
                late = [r for r in roles if not self.children[r].ready]
                raise StartInterruptedError(
                    f"stopped during start-up (waiting for {', '.join(late)})"
                )
            self._drain_stats()
            for r in roles:
                c = self.children[r]
                if not c.alive:
                    code = c.proc.returncode if c.proc else None
                    raise SupervisorError(f"{r} exited with code {code} during start-up")
            if time.monotonic() > deadline:
                late = [r for r in roles if not self.children[r].ready]
                raise SupervisorError(
                    f"not ready after {self.opts.ready_timeout_s:.0f} s: {', '.join(late)} "
                    f"(bad handshakes dropped: {dict(self.stats.dropped)})"
                )
            if self.failure:
                raise SupervisorError(self.failure)
            time.sleep(0.05)

    # ------------------------------------------------------------------ watching

    def _drain_stats(self) -> None:
        """Read at most MAX_DRAIN messages of the stats link; believe only the children."""
        for _ in range(MAX_DRAIN):
            msg = self.stats.recv_nowait()
            if msg is None:
                return
            self._take(msg)

    def _take(self, msg: Hello | Stats) -> None:
        source = msg.header.source
        child = self.children.get(source)
        if child is None or child.proc is None:
            self.untrusted["unknown_source"] += 1
            return
        if isinstance(msg, Hello):
            if msg.role != source:
                self.untrusted["role_mismatch"] += 1
            elif msg.pid != child.proc.pid:
                self.untrusted["wrong_pid"] += 1
            else:
                child.hello_pid = msg.pid
                self._check_hello(child, msg)
            return
        if msg.pid != child.proc.pid:
            self.untrusted["wrong_pid"] += 1
        elif child.hello_pid != child.proc.pid:
            # not yet believed: sent before this process's first Hello, or by its predecessor
            # just before a restart (normal, so counted apart from `untrusted`)
            self.stats_before_hello += 1
        elif msg.process == source:
            child.stats = dict(msg.values)
            child.stats_t = time.monotonic()
        else:  # a child publishes Stats only under its own role
            self.untrusted["unknown_process"] += 1

    def _check_hello(self, child: Child, msg: Hello) -> None:
        cfg = self.cfg
        problems = []
        if msg.robot != cfg.name:
            problems.append(f"robot {msg.robot!r} != {cfg.name!r}")
        if msg.latent_dim != cfg.system2.latent_dim:
            problems.append(f"latent size {msg.latent_dim} != {cfg.system2.latent_dim}")
        if msg.n_joints != cfg.n_joints:
            problems.append(f"{msg.n_joints} joints != {cfg.n_joints}")
        if problems:
            self.failure = f"handshake with {child.role} (pid {msg.pid}) failed: " + "; ".join(
                problems
            )
            return
        if not child.ready:
            child.ready = True
            if child.restarts:
                self.events.append(f"{child.role} back after restart {child.restarts}")

    def poll(self) -> bool:
        """Watch once: read stats, apply the failure policy. Returns False when it must stop."""
        self._drain_stats()
        msg = self.latent.recv_latest()
        if msg is not None:
            self.instruction = msg.instruction
        last = self.latent.last
        if last is not None:
            self.latent_age_ms = (time.monotonic_ns() - last.header.t_mono_ns) / 1e6
            self.latent_age_max_ms = max(self.latent_age_max_ms, self.latent_age_ms)
        now = time.monotonic()
        for role, c in self.children.items():
            if c.alive or c.proc is None:
                continue
            if c.next_start == 0.0:
                code = c.proc.returncode
                c.exit_codes.append(code)
                if role not in RESTARTABLE and role not in ("recorder", "viewer"):
                    self.failure = f"{role} died (exit code {code}); stopping everything"
                    return False
                if now - c.started_at >= self.opts.healthy_after_s:
                    c.backoff_level = 0  # it had been healthy: not a crash loop
                backoff = min(BACKOFF_S[0] * 2**c.backoff_level, BACKOFF_S[1])
                c.next_start = now + backoff
                self.events.append(f"{role} died (exit {code}); restart in {backoff:.1f} s")
            elif now >= c.next_start:
                c.restarts += 1
                c.backoff_level += 1
                c.next_start = 0.0
                self._spawn(c)
        return not self.failure

    def status(self) -> dict[str, object]:
        """A snapshot for the live view and the report's time series (resets the window max)."""
        snap = {
            "t": time.monotonic() - self.t_start,
            "robot": self.cfg.name,
            "instruction": self.instruction,
            "latent_age_ms": self.latent_age_ms,
            "latent_age_max_ms": self.latent_age_max_ms,
            "events": list(self.events)[-3:],
        }
        for role, c in self.children.items():
            snap[role] = dict(c.stats, alive=float(c.alive), restarts=float(c.restarts))
        self.latent_age_max_ms = 0.0
        return snap

    def publish_status(self, snap: dict[str, object]) -> None:
        """Share the snapshot with `dualsys status` (ipc, local only)."""
        values = {"t": float(snap["t"]), "latent_age_ms": float(snap["latent_age_ms"])}
        for role in self.children:
            for k, v in snap[role].items():
                values[f"{role}.{k}"] = float(v)
        values = {k: v for k, v in values.items() if v == v and abs(v) != float("inf")}
        self.status_pub.send(Stats(process="supervisor", values=values))

    # ------------------------------------------------------------------ shutdown

    def stop(self) -> dict[str, int | None]:
        """Stop in stages: System 2 (and recorder), then control + policy (control ramps the
        robot to hold), then the robot (damps). SIGTERM first, SIGKILL for anything still
        there; every child is reaped within 5 s. Returns the exit codes."""
        codes: dict[str, int | None] = {}
        if self.lock is None:  # start() never owned the run directory: nothing to undo
            return codes
        t_end = time.monotonic() + 4.5
        for stage, share in STOP_STAGES:
            kids = [self.children[r] for r in stage if r in self.children]
            for c in kids:
                if c.alive:
                    c.proc.send_signal(signal.SIGTERM)
            stage_end = time.monotonic() + share * max(0.0, t_end - time.monotonic())
            for c in kids:
                if c.proc is None:
                    codes[c.role] = None
                    continue
                try:
                    codes[c.role] = c.proc.wait(timeout=max(0.05, stage_end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    self.events.append(f"{c.role} did not stop on SIGTERM in time: killed")
                    try:  # a killed process in the middle of disk I/O can take a moment
                        codes[c.role] = c.proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        codes[c.role] = None
                        self.events.append(f"{c.role} (pid {c.proc.pid}) not reaped after SIGKILL")
        for name in ("stats", "latent", "status_pub", "sec"):  # what _open_links got to open
            link = getattr(self, name, None)
            if link is not None:
                link.close()
        if self.ctx is not None:
            self.ctx.destroy(0)
        remove_links(self.run_dir)
        self.lock.release()
        self.lock = None
        return codes
