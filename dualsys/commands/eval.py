"""`dualsys eval --robot gr1`: score every behaviour through the full live system."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from dualsys import config


def _plot(summary: dict, results: list, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["behaviours"])
    rates = [100 * summary["behaviours"][n]["success_rate"] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    axes[0].barh(names, rates, color=["tab:green" if r >= 90 else "tab:red" for r in rates])
    axes[0].axvline(90, ls="--", color="gray")
    axes[0].set_xlim(0, 100)
    axes[0].set_xlabel("success [%]")
    axes[0].set_title("Live success per behaviour")
    lat = [r.switch_latency_s for r in results if r.switch_latency_s == r.switch_latency_s]
    axes[1].hist(lat, bins=20, color="tab:blue")
    axes[1].axvline(0.5, ls="--", color="gray", label="target p50 0.5 s")
    axes[1].set_xlabel("switch latency [s]")
    axes[1].set_title("say -> robot motion follows")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def _seconds(x: float | None) -> str:
    """Seconds to two decimals, "-" for none or not finite (the table and the summary line)."""
    return "-" if x is None or not math.isfinite(x) else f"{float(x):.2f}"


def switch_line(latency: dict) -> str:
    """The run's switch latency in plain seconds, e.g. `switch latency p50 0.12 s, p99 0.31 s`
    ("-" where no episode measured one)."""
    p50, p99 = (_seconds(latency.get(k)) for k in ("p50", "p99"))
    return f"switch latency p50 {p50}{' s' * (p50 != '-')}, p99 {p99}{' s' * (p99 != '-')}"


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the live evaluation; print a table; write --report JSON and a PNG beside it."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from dualsys.behaviours.live_eval import run_live_eval, summarise
    from dualsys.behaviours.phrasings import (
        PhrasingsError,
        eval_phrasings,
        heldout_phrasings,
    )
    from dualsys.report import budget_line, build_report, machine_line
    from dualsys.rundir import default_run_dir

    cfg = config.load_robot(args.robot)
    try:
        phrasings = eval_phrasings(cfg, args.phrasings)
        heldout = {t for ts in heldout_phrasings(cfg).values() for t in ts}
    except PhrasingsError as exc:
        print(f"dualsys eval: error: {exc}", file=sys.stderr)
        return 2
    if args.behaviours:
        wanted = [b.strip() for b in args.behaviours.split(",") if b.strip()]
        unknown = sorted(set(wanted) - set(phrasings))
        if unknown:
            print(f"dualsys eval: unknown behaviours {unknown}; known: {sorted(phrasings)}")
            return 2
        phrasings = {b: phrasings[b] for b in wanted}
    untrained = args.untrained
    if not untrained and (cfg.policy.checkpoint is None or cfg.system2.checkpoint is None):
        print(
            f"dualsys eval: {cfg.path} names no trained checkpoints; nothing to evaluate "
            "(use --untrained to exercise the pipeline only)",
            file=sys.stderr,
        )
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    record = Path(args.record) if args.record else None
    viewer = None
    if args.view:  # the web view attached to the evaluation's run (dualsys/view/spawn.py)
        from dualsys.commands.view import no_viewer, viewer_args
        from dualsys.view import have_viewer
        from dualsys.view.spawn import start_viewer

        if not have_viewer():
            return no_viewer("eval")
        viewer = start_viewer(cfg, run_dir, viewer_args(args))
    console = Console(stderr=True)
    total = args.episodes * len(phrasings)
    t0 = time.monotonic()
    with Progress(console=console, transient=False) as bar:
        task = bar.add_task(
            f"live eval: {len(phrasings)} behaviours x {args.episodes}", total=total
        )

        def progress(r) -> None:
            ok = "[green]ok[/]" if r.success else f"[red]FAIL[/] {r.reason}"
            bar.console.print(
                f"  {r.behaviour:22s} {r.phrasing!r:45s} {ok}  switch {r.switch_latency_s:.2f} s"
            )
            bar.advance(task)

        try:
            results, codes, sup = run_live_eval(
                cfg,
                run_dir,
                phrasings,
                args.episodes,
                args.seed,
                untrained,
                progress,
                record,
                args.system2 or "",
            )
        finally:
            from dualsys.view.spawn import stop_viewer

            stop_viewer(viewer)
    summary = summarise(results, heldout)
    table = Table(title=f"dualsys eval --robot {cfg.name} (live, {args.episodes} per behaviour)")
    for col in ("behaviour", "success", "episodes", "held-out phrasings", "switch p50 s"):
        table.add_column(col)
    for name, b in summary["behaviours"].items():
        style = "green" if b["success_rate"] >= 0.9 else "red"
        p50 = b["switch_latency_s_p50"]
        ho = b["heldout"]
        table.add_row(
            name,
            f"[{style}]{100 * b['success_rate']:.0f}%[/]",
            str(b["episodes"]),
            f"{ho['successes']}/{ho['episodes']}" if ho["episodes"] else "-",
            _seconds(p50),
        )
    console.print(table)
    console.print(switch_line(summary["switch_latency_s"]))
    system = build_report(
        cfg,
        run_dir,
        time.monotonic() - t0,
        all(c == 0 for c in codes.values()),
        "ok",
        [],
        extra={"exit_codes": codes},
    )
    summary["system"] = {
        k: system[k]
        for k in ("system1", "system2", "robot", "budget", "bus", "link")
        if k in system
    }
    summary["phrasings_file"] = args.phrasings or "training + held-out phrasings, interleaved"
    summary["episodes"] = [r.__dict__ for r in results]
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1, default=float) + "\n")
        _plot(summary, results, path.with_suffix(".png"))
        console.print(f"report: {path} and {path.with_suffix('.png')}")
    console.print("timing budgets during the evaluation: " + budget_line(system["budget"]))
    if not system["budget"]["ok"]:  # whether the machine or dualsys broke it
        console.print("machine: " + machine_line(system.get("machine") or {}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand."""
    p = sub.add_parser("eval", help="score every behaviour through the full live system")
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--episodes", type=int, default=20, help="episodes per behaviour")
    p.add_argument("--behaviours", help="comma-separated subset (default: all)")
    p.add_argument(
        "--phrasings",
        help="TOML file(s) [behaviours] name = [phrasings], comma-separated ones are interleaved "
        "(default: robots/<robot>/phrasings_train.toml interleaved with phrasings_heldout.toml)",
    )
    p.add_argument("--seed", type=int, default=1000, help="first scene seed")
    p.add_argument("--report", help="write JSON here (and a PNG beside it)")
    p.add_argument("--run-dir", help="run directory for sockets and summaries")
    p.add_argument("--record", help="record every bus topic of the evaluation to this MCAP file")
    from dualsys.commands.view import add_live_view_options

    add_live_view_options(p)
    p.add_argument("--untrained", action="store_true", help="pipeline check with random models")
    p.add_argument(
        "--system2",
        metavar="tcp://HOST:PORT",
        help="evaluate against a remote System 2 server (`dualsys system2 serve`), as up does",
    )
    p.set_defaults(func=cmd_eval)
