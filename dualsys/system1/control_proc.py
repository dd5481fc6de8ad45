"""The control process: real-time set-up, the absolute-deadline loop, signals, run summary."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from dualsys.config import RobotConfig
from dualsys.rundir import write_summary
from dualsys.system1 import tick as tk
from dualsys.system1.control import ROLE, ControlLoop
from dualsys.system1.floor import IdleLatency, MissAttribution, calibrate_margin, margin_cap_ns
from dualsys.system1.monitor import T_DONE
from dualsys.system1.rt import drop_realtime, freeze_gc, setup_realtime
from dualsys.timing import pin_to_core


class StopFlag:
    """Set by SIGTERM (and SIGINT when not supervised); read by the loop."""

    def __init__(self) -> None:
        self.set = False

    def install(self) -> None:
        """SIGTERM stops; SIGINT stops too unless DUALSYS_SUPERVISED=1 (then it is ignored)."""
        signal.signal(signal.SIGTERM, self._handler)
        if os.environ.get("DUALSYS_SUPERVISED") == "1":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.set = True


#: ticks between two baselines of the miss attribution (procfs reads after the send)
BASELINE_EVERY = 32
#: with prefetch, the loop wakes this long before its spin margin to take what arrived (a
#: decode takes up to ~0.2 ms with cold caches), then sleeps again to the margin
PREFETCH_LEAD_NS = 300_000
#: prefetch only at periods of at least this (<= 500 Hz): at 1 kHz the extra wake-up per
#: period doubled the late wake-ups of the floor benchmark (benchmarks/results/floor.md),
#: and the tick there is already short (its inputs come in smaller steps)
PREFETCH_MIN_PERIOD_NS = 2_000_000


def use_prefetch(period_ns: int) -> bool:
    """Whether the loop prefetches at this period (off also with DUALSYS_NO_PREFETCH=1)."""
    return period_ns >= PREFETCH_MIN_PERIOD_NS and os.environ.get("DUALSYS_NO_PREFETCH") != "1"


def arm(
    loop: ControlLoop, start: int, end: int, margin_ns: int, prefetch: bool, baseline: bool
) -> np.ndarray:
    """Set the compiled loop's registers (`ControlLoop.regs`) for ticks from `start` to `end`
    (monotonic ns); baseline: take a miss-attribution baseline every BASELINE_EVERY ticks."""
    period = loop.period_ns
    R = loop.regs  # noqa: N806
    R[:] = 0
    R[tk.R_DEADLINE], R[tk.R_END] = start, end
    R[tk.R_MARGIN] = margin_ns
    R[tk.R_LEAD] = min(PREFETCH_LEAD_NS, max(period // 2 - margin_ns, 0))  # never under half
    R[tk.R_PREFETCH] = prefetch
    R[tk.R_BASELINE_EVERY] = BASELINE_EVERY if baseline else 0
    R[tk.R_STATS_EVERY], R[tk.R_HELLO_EVERY] = loop.stats_every, loop.hello_every
    R[tk.R_MON_TICKS] = loop.mon.ticks
    return R


def run_loop(
    loop: ControlLoop,
    stop: StopFlag,
    duration_s: float,
    margin_ns: int,
    causes: MissAttribution | None = None,
    prefetch: bool = True,
) -> int:
    """The 200 Hz loop: sleep to the margin, spin to the deadline, tick; skip missed periods.

    The ticks run in compiled code (`ControlLoop.run_ticks`, dualsys.system1.tick): a
    steady-state tick (no new chunk or latent, no Stats part due, no miss) makes no Python
    call and allocates nothing. This function handles what they hand back: inputs to decode
    (`ControlLoop.receive`), late wake-ups (skipped periods), and a sent tick's bookkeeping
    (Stats, miss attribution, the histograms of the compiled ticks before it).

    prefetch: wake PREFETCH_LEAD_NS before the spin margin and take what arrived, sleep on
    to the margin, rehearse the kernel and the command frame (`ControlLoop.rehearse`) and spin
    to the deadline: the tick finds the decode work done, takes only what came after, and
    runs on warm caches. Every miss is given a cause in `causes` (woke late, overran,
    preempted, host). A stop signal ends the loop at the next return to Python (its handler
    runs there): at once when it interrupts a sleep, else within a Stats period.
    Returns the end time (monotonic ns).
    """
    period = loop.period_ns
    start = time.monotonic_ns() + period
    end = start + int(duration_s * 1e9) if duration_s > 0 else 1 << 62
    loop.activate(start - period)
    mon = loop.mon
    stamps = loop.stages.stamps
    R = arm(loop, start, end, margin_ns, prefetch, causes is not None)  # noqa: N806
    while not stop.set:
        ev = loop.run_ticks()
        deadline = int(R[tk.R_DEADLINE])
        if ev == tk.EV_END:
            break
        if ev == tk.EV_INPUT:  # before the prefetch's or the tick's send: decode, go on
            loop.receive(deadline)
        elif ev == tk.EV_LATE:  # woke after the next deadline: skip, never catch up
            loop.flush_pending()
            wake = int(R[tk.R_WAKE])
            late = wake - deadline
            n = late // period
            mon.skip(n)
            if causes is not None:
                causes.attribute(late, period, n)
            loop.on_misses(wake)
            R[tk.R_DEADLINE] = deadline + n * period
            R[tk.R_MON_TICKS] = mon.ticks
        elif ev == tk.EV_AFTER:  # the tick at `deadline` was sent: its bookkeeping
            loop.flush_pending()
            wake, sent = int(R[tk.R_WAKE]), int(R[tk.R_SENT])
            late, missed = wake - deadline, bool(R[tk.R_MISSED])
            if R[tk.R_CHANGED]:
                loop.note_safe(deadline)
            loop.stats_step(sent)
            done = stamps[T_DONE] = time.monotonic_ns()
            loop.stages.record()
            # work = wake to command sent (receive, kernel, send: what the deadline sees);
            # tick_total adds the bookkeeping after the send (Stats, spread over a few ticks)
            mon.tick(late, sent - wake, missed)
            loop.tick_total_us.record((done - wake) // 1000)
            if missed:
                loop.on_misses(done)
                if causes is not None:
                    causes.attribute(late, period)
            elif causes is not None and mon.ticks % BASELINE_EVERY == 0:
                causes.baseline()
            R[tk.R_DEADLINE] = deadline + period
            R[tk.R_MON_TICKS] = mon.ticks
        # EV_SIGNAL: the handler has run; the loop condition reads the flag
    loop.flush_pending()
    return time.monotonic_ns()


#: set to 1 to run the control process's ZeroMQ I/O thread on the loop's core (off by default;
#: the A/B of benchmarks/floor.py --io-ab); any other value leaves ZeroMQ's own placement
IO_ON_LOOP_CORE_ENV = "DUALSYS_ZMQ_IO_ON_LOOP_CORE"


def control_context(core: int | None) -> zmq.Context:
    """The control process's ZeroMQ context; with DUALSYS_ZMQ_IO_ON_LOOP_CORE=1 its I/O thread
    runs on the loop's core.

    A send (and a receive that frees queue space) wakes the context's I/O thread through its
    mailbox: with the thread on the other core that wake is a cross-CPU interrupt, on the
    loop's core a local wake-up (the thread, normal priority, runs once the FIFO loop sleeps).
    Measured side by side at 1 kHz (`benchmarks/floor.py --io-ab`, results/floor.md) the loop
    core placement did not miss fewer deadlines, so ZeroMQ's own placement stays the default.
    Create the context before the loop turns FIFO. A core this process may not use is left alone
    (libzmq aborts on an affinity it cannot set), as is a libzmq without the option.
    """
    ctx = zmq.Context()
    if os.environ.get(IO_ON_LOOP_CORE_ENV) != "1":
        return ctx
    if core is not None and core in os.sched_getaffinity(0):
        with contextlib.suppress(zmq.ZMQError, AttributeError):
            ctx.set(zmq.THREAD_AFFINITY_CPU_ADD, core)
    return ctx


def run_control(cfg: RobotConfig, run_dir: Path, duration_s: float, fifo: bool = True) -> int:
    """Run the control process until the duration ends or a stop signal; returns exit code."""
    stop = StopFlag()
    stop.install()
    ctx = control_context(cfg.cores.system1)  # before FIFO: its I/O thread stays normal priority
    loop = ControlLoop(cfg, ctx, run_dir)
    loop.configure()
    pin_to_core(cfg.cores.system1)  # warm on the loop's core, before FIFO: a FIFO warm-up
    loop.warm()  # would starve the policy process that shares the core
    rt = setup_realtime(cfg.cores.system1, fifo=fifo)
    loop.fifo = int(rt.fifo)
    idle = IdleLatency()
    if idle.hold(0):
        rt.notes.append(idle.note)
    margin_ns, margin_info = calibrate_margin(
        loop.period_ns, margin_cap_ns(loop.period_ns, cfg.budgets.spin_margin_us * 1000)
    )
    causes = MissAttribution(rt.cpus[0] if len(rt.cpus) == 1 else -1)
    loop.miss_causes = causes.counts
    freeze_gc()
    prefetch = use_prefetch(loop.period_ns)
    end_ns = run_loop(loop, stop, duration_s, margin_ns, causes, prefetch)
    loop.deactivate()
    idle_held = idle.held
    idle.release()
    drop_realtime()
    summary = loop.summary(rt.scheduler, rt.cpus, end_ns)
    summary["miss_causes"] = causes.as_dict()
    summary["spin_margin"] = margin_info
    summary["idle_latency_held"] = idle_held
    causes.close()
    summary["tick_total_us"] = loop.tick_total_us.summary()
    summary["prefetch"] = prefetch
    summary["rt_notes"] = rt.notes
    summary["mlocked"] = rt.mlocked
    path = write_summary(run_dir, ROLE, summary)
    loop.close()
    ctx.term()
    print(
        f"dualsys control: {summary['ticks']} ticks, {summary['deadline_misses']} misses, "
        f"lateness p99 {summary['lateness_us']['p99']:.0f} us, work p99 "
        f"{summary['work_us']['p99']:.0f} us, {rt.scheduler}; summary in {path}",
        file=sys.stderr,
    )
    return 0
