"""`dualsys up --robot NAME`: bring the whole robot up, watch it, report it, stop it cleanly."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from dualsys import config
from dualsys.report import History, build_report, summary_text, write_report
from dualsys.rundir import RunDirError, default_run_dir
from dualsys.supervisor import StartInterruptedError, Supervisor, SupervisorError, UpOptions
from dualsys.timing import warn_once


class _Stop:
    def __init__(self) -> None:
        self.why = ""

    def __call__(self, signum: int, frame: object) -> None:
        self.why = signal.Signals(signum).name


def _history_point(snap: dict) -> dict[str, float]:
    c, s2, rb = (snap.get(r) or {} for r in ("control", "system2", "robot"))
    nan = float("nan")
    return {
        "t": round(snap["t"], 2),
        "control_hz": c.get("rate_hz", nan),
        "system2_hz": s2.get("rate_hz", nan),
        "realtime_factor": rb.get("realtime_factor", nan),
        "latent_age_ms": snap.get("latent_age_ms", nan),
        "latent_age_max_ms": snap.get("latent_age_max_ms", nan),
        "misses": c.get("misses", nan),
    }


def run_up(cfg: config.RobotConfig, args: argparse.Namespace) -> int:
    """Start, watch and stop the system; write the report. Returns the exit code."""
    try:
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    except RunDirError as exc:
        print(f"dualsys up: error: {exc}", file=sys.stderr)
        return 2
    untrained = args.untrained
    if not untrained and (cfg.policy.checkpoint is None or cfg.system2.checkpoint is None):
        warn_once(
            f"{cfg.path} names no trained checkpoint for "
            + " and ".join(
                n
                for n, ck in (
                    ("policy", cfg.policy.checkpoint),
                    ("system2", cfg.system2.checkpoint),
                )
                if ck is None
            )
            + ": running UNTRAINED random-init models (timing is real, motion is meaningless)"
        )
        untrained = True
    if args.view:
        from dualsys.commands.view import no_viewer, viewer_args
        from dualsys.view import have_viewer

        if not have_viewer():
            return no_viewer("up")
    opts = UpOptions(
        view=viewer_args(args) + (["--no-grounding"] if untrained else []) if args.view else None,
        untrained=untrained,
        fifo=not args.no_fifo,
        system2_server=args.system2 or "",
        record=Path(args.record) if args.record else None,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )
    if opts.log_dir:
        opts.log_dir.mkdir(parents=True, exist_ok=True)
    stop = _Stop()
    sup = Supervisor(cfg, run_dir, opts, should_stop=lambda: bool(stop.why))
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"dualsys up: starting {cfg.name} ({cfg.path}) in {run_dir} ...", file=sys.stderr)
    t0 = time.monotonic()
    reason, history = "", History()
    try:
        sup.start()
        print(
            f"dualsys up: all processes ready in {time.monotonic() - t0:.1f} s "
            f"(Ctrl-C to stop{', ' + str(args.duration) + ' s run' if args.duration else ''})",
            file=sys.stderr,
        )
        if args.view and (run_dir / "viewer.url").exists():
            print(
                f"dualsys up: view: {(run_dir / 'viewer.url').read_text().strip()}", file=sys.stderr
            )
        reason = _watch(cfg, sup, stop, args, history)
    except RunDirError as exc:  # another run owns the directory, or it is not dualsys's
        print(f"dualsys up: error: {exc}", file=sys.stderr)
        return 1
    except StartInterruptedError as exc:
        codes = sup.stop()
        print(f"dualsys up: {stop.why}: {exc}; processes stopped {codes}", file=sys.stderr)
        return 130 if stop.why == "SIGINT" else 143
    except SupervisorError as exc:
        reason = str(exc)
    t_run = time.monotonic() - (sup.t_start or t0)
    t_stop = time.monotonic()
    codes = sup.stop()
    shutdown_s = time.monotonic() - t_stop
    failed = [f"{r} exit {c}" for r, c in codes.items() if c not in (0, None)]
    clean = not reason and not failed
    if not reason and failed:
        reason = "unclean child exit: " + ", ".join(failed)
    report = build_report(
        cfg,
        run_dir,
        t_run,
        clean,
        reason or "ok",
        history,
        extra={
            "exit_codes": codes,
            "shutdown_s": round(shutdown_s, 3),
            "events": list(sup.events),
            "restarts": {r: c.restarts for r, c in sup.children.items()},
            "untrained": untrained,
            "untrusted": dict(sup.untrusted),
            # malformed messages on the stats link, by drop reason (the supervisor's receiver)
            "stats_dropped": dict(sup.stats.dropped) if hasattr(sup, "stats") else {},
            "stats_before_hello": sup.stats_before_hello,
        },
    )
    print(summary_text(report), file=sys.stderr)
    if args.report:
        png = write_report(report, Path(args.report), run_dir)
        print(f"dualsys up: report {args.report} and {png}", file=sys.stderr)
    if not clean:
        print(f"dualsys up: FAILED: {reason}", file=sys.stderr)
    return 0 if clean else 1


def _watch(cfg, sup: Supervisor, stop: _Stop, args, history: History) -> str:
    t_end = time.monotonic() + args.duration if args.duration else float("inf")
    live = None
    if not args.headless:
        from rich.live import Live

        from dualsys.liveview import panel

        live = Live(panel(cfg, sup.status()), refresh_per_second=2, transient=False)
        live.start()
    from dualsys.liveview import headless_line

    next_view, next_line = 0.0, time.monotonic() + 5.0
    try:
        while not stop.why and time.monotonic() < t_end:
            if not sup.poll():
                return sup.failure
            now = time.monotonic()
            if now >= next_view:
                snap = sup.status()
                history.append(_history_point(snap))
                sup.publish_status(snap)
                if live is not None:
                    from dualsys.liveview import panel

                    live.update(panel(cfg, snap))
                next_view = now + 0.5
            if args.headless and now >= next_line:
                print(headless_line(cfg, sup.status()), flush=True)
                next_line = now + 5.0
            time.sleep(0.05)
    finally:
        if live is not None:
            live.stop()
    if stop.why:
        print(f"dualsys up: {stop.why}: stopping ...", file=sys.stderr)
    return ""


def cmd_up(args: argparse.Namespace) -> int:
    """Entry of `dualsys up`."""
    if args.control_hz:
        args.set = config.rate_overrides(config.load_robot(args.robot), args.control_hz) + args.set
    if args.set:
        # validated here first, then handed to every child process through the environment
        config.parse_overrides(config.resolve(args.robot), args.set)
        os.environ[config.OVERRIDES_ENV] = ";".join(args.set)
    cfg = config.load_robot(args.robot)
    if cfg.overrides:
        print(f"dualsys up: overrides {'; '.join(cfg.overrides)}", file=sys.stderr)
    return run_up(cfg, args)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `up` subcommand."""
    p = sub.add_parser(
        "up",
        help="bring the whole robot up (simulation, System 2, System 1)",
        description="Start the robot (simulation by default), System 2 and System 1, pinned to "
        "the cores in the robot config; show live status; stop cleanly on Ctrl-C/SIGTERM or "
        "after --duration; write a run report.",
    )
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: run)")
    p.add_argument("--headless", action="store_true", help="a status line every 5 s, no panel")
    p.add_argument("--report", help="write the run report JSON here (and a PNG beside it)")
    p.add_argument("--run-dir", help="run directory for sockets and summaries")
    p.add_argument("--record", help="record every bus topic to this MCAP file")
    p.add_argument("--log-dir", help="write each process's output to LOG_DIR/ROLE.log")
    from dualsys.commands.view import add_live_view_options

    add_live_view_options(p)
    p.add_argument(
        "--untrained",
        action="store_true",
        help="run random-init policy and fusion head (timing work; no checkpoint needed)",
    )
    p.add_argument("--no-fifo", action="store_true", help="do not ask for SCHED_FIFO")
    p.add_argument(
        "--system2",
        metavar="tcp://HOST:PORT",
        help="use a remote System 2 server (`dualsys system2 serve`) through a local link "
        "process instead of starting System 2 here",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value for this run (repeatable; validated like the file), "
        "e.g. --set budgets.miss_rate=0.001",
    )
    p.add_argument(
        "--control-hz",
        type=int,
        default=0,
        metavar="HZ",
        help="run System 1's control loop at HZ (e.g. 500, 1000) with the spin margin and the "
        "miss-streak budget kept in time (config.rate_overrides); printed and reported",
    )
    p.set_defaults(func=cmd_up)
