"""Every hostile input against ONE live `dualsys up --robot gr1` (issue 17, point 9).

Starts a real `dualsys up --headless` (the trained brain unless --untrained) in a fresh run
directory, attaches `dualsys status` for the whole session, then throws one class after another
(a pause of --seconds-per-class between, each class timed): instruction texts through the real
`dualsys say`; malformed frames of every class on the two SUB sockets a rogue local peer can
reach (System 2's instruction link, the supervisor's stats link); Instructions System 2 must
refuse sent past `say`; rogue Hello/Stats claiming every role; random source names; a
>= 10k msg/s flood with `dualsys status --once` attaching meanwhile; a second `dualsys up` on
the same run directory. Then Ctrl-C (SIGINT), and the run report says what was counted.
Offline, in the same table: hostile configs through `dualsys check`, and the receivers' fuzz
totals from benchmarks/results/fuzz.md. The machine's floor is probed on System 1's core
for as long as the live run lasts, and the miss budget judged against it
(dualsys.testing.floor).

    .venv/bin/python benchmarks/hostile.py [--untrained] [--seconds-per-class 2] [--out]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _load import header  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.testing import hostile as live  # noqa: E402
from dualsys.testing.floor import FloorBeside, judge_misses  # noqa: E402

CFG = config.load_robot("gr1")
GR1 = config.ROBOTS_DIR / "gr1.toml"
ELBOW = 'left_elbow_pitch_joint = { group = "left_arm", min = -2.27, max = 2.27'
#: (what, old text, new text, key `dualsys check` must name)
CONFIGS = [
    (
        "spin margin near the period",
        "spin_margin_us = 1000",
        "spin_margin_us = 4000",
        "budgets.spin_margin_us",
    ),
    (
        "watchdog under 2 periods",
        "command_timeout_ms = 50.0",
        "command_timeout_ms = 5.0",
        "budgets.command_timeout_ms",
    ),
    ("stats rate inf", "stats_hz = 2.0", "stats_hz = inf", "rates.stats_hz"),
    (
        "stale limit NaN",
        "latent_stale_ms = 500.0",
        "latent_stale_ms = nan",
        "budgets.latent_stale_ms",
    ),
    ("camera 1e9 px wide", "width = 128", "width = 1000000000", "cameras[0].width"),
    (
        "joint beyond the model",
        ELBOW,
        ELBOW.replace("max = 2.27", "max = 3.0"),
        "joints.left_elbow_pitch_joint.max",
    ),
    (
        "checkpoint path leaves the dir",
        'checkpoint = "gr1/policy.safetensors"',
        'checkpoint = "../outside/x"',
        "policy.checkpoint",
    ),
    (
        "tcp link without CURVE",
        'latent = "ipc://{run}/latent.sock"',
        'latent = "tcp://127.0.0.1:5611"',
        "endpoints.latent",
    ),
]


def run_configs(tmp: Path) -> list[live.ClassResult]:
    """Each hostile config through the real `dualsys check`: exit 2 naming the key."""
    res = live.ClassResult("config: dualsys check", "; ".join(c[0] for c in CONFIGS), len(CONFIGS))
    (tmp / "outside").mkdir(parents=True)
    (tmp / "outside" / "x").write_text("")
    text0 = GR1.read_text().replace('"gr1/', f'"{config.ROBOTS_DIR}/gr1/')
    bad = []
    for i, (what, old, new, key) in enumerate(CONFIGS):
        old = old.replace('"gr1/', f'"{config.ROBOTS_DIR}/gr1/')
        assert old in text0, old
        path = tmp / "robots" / f"bad{i}.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text0.replace(old, new, 1))
        p = subprocess.run([*live.CLI, "check", str(path)], capture_output=True, text=True)
        res.outcome[f"refused (exit {p.returncode})"] += 1
        if p.returncode != 2 or key not in p.stderr:
            bad.append(f"{what}: exit {p.returncode}, {p.stderr.strip()[-160:]!r}")
    res.ok, res.note = not bad, "; ".join(bad) or "every refusal names file and key"
    return [res]


def fuzz_totals() -> list[str]:
    """The receivers' fuzz rows (benchmarks/results/fuzz.md), if that benchmark has run."""
    path = ROOT / "benchmarks" / "results" / "fuzz.md"
    if not path.exists():
        return ["| fuzz (offline) | benchmarks/results/fuzz.md missing | - | - | - | - |"]
    rows = []
    for line in path.read_text().splitlines():
        m = re.match(
            r"\| (receiver: \w+|codec: [^|]+|config: [^|]+) \| (\d+) \| [^|]+ \| "
            r"[^|]+ \| (\d+) \| ([^|]+) \|",
            line,
        )
        if m:
            name, cases, fails, outcomes = m.groups()
            rows.append(
                f"| fuzz (offline): {name} | hypothesis cases | {cases} | {outcomes.strip()}"
                f" | {'yes' if fails == '0' else f'NO ({fails} failures)'} | - |"
            )
    return rows


def session(args: argparse.Namespace, work: Path) -> tuple[list[live.ClassResult], int, dict]:
    """Bring up, run every live class, stop; returns results, up's exit code, the report."""
    up = live.LiveUp(work, untrained=args.untrained)
    pause = args.seconds_per_class
    results: list[live.ClassResult] = []
    status = None
    try:
        time.sleep(3.0)  # past start-up transients
        status = live.start_status(up)
        t_status = up.since_ready()
        results.append(live.run_say(up, CFG, pause))
        results += live.run_raw(up, CFG, args.per_class, pause)
        results.append(live.run_peer_instructions(up, CFG, args.per_class // 5, pause))
        results.append(live.run_rogue_hello(up, CFG, args.per_class // 4, pause))
        results.append(live.run_random_sources(up, CFG, 10 * args.per_class, pause))
        results.append(live.run_flood(up, CFG, args.flood_seconds, pause))
        results.append(live.run_second_up(up, pause))
        results.append(live.stop_status(status, up, t_status))
        status = None
    finally:
        if status is not None:
            status.kill()
        code = up.stop()
    report = json.loads(up.report.read_text()) if up.report.exists() else {}
    if code != 0:
        print("".join(up.lines[-30:]), file=sys.stderr)
    return results, code, report


def render(args, results, code, report, counted, floors, verdict) -> str:
    s1 = report.get("system1", {})
    b = report.get("budget", {})
    brain = "untrained (--untrained)" if args.untrained else "trained (shipped weights)"
    cmd = "python benchmarks/hostile.py" + (" --untrained" if args.untrained else "")
    cmd += f" --seconds-per-class {args.seconds_per_class:g} --per-class {args.per_class}"
    out = [header("Hostile inputs against one live `dualsys up` (issue 17)", cmd)]
    out.append(
        f"One `dualsys up --robot gr1 --headless` ({brain}); every class below thrown at it in "
        "order through the real interfaces, `dualsys status` attached throughout, then Ctrl-C. "
        "t = seconds since `up` was ready. Outcomes come from the interfaces' exit codes and the "
        "run report's counters (System 2's `bus.dropped` instruction.*, the supervisor's "
        "`stats_dropped` and `untrusted`); S1 misses = control misses / ticks during the class "
        "(status socket).\n"
    )
    out.append("| class | what was sent | count | outcome | as expected | t (s) / S1 misses |")
    out.append("|---|---|---|---|---|---|")
    for r in results:
        outc = ", ".join(f"{k} {v}" for k, v in r.outcome.most_common()) or "-"
        if r.s2_dropped:
            outc += f"; System 2 counted +{r.s2_dropped:.0f} live"
        if r.note:
            outc += f"; {r.note}"
        when = f"{r.t0:.0f}-{r.t1:.0f} / {r.misses:.0f} in {r.ticks:.0f}" if r.ticks else "offline"
        out.append(
            f"| {r.name} | {r.what} | {r.count} | {outc.replace('|', '/')} | "
            f"{'yes' if r.ok else 'NO'} | {when} |"
        )
    out += fuzz_totals()
    out.append(
        "\nCounted in the run report vs sent (excluding the flood, whose frames beyond a "
        "queue's high-water mark ZeroMQ drops unread):\n"
    )
    out.append("| receiver | reason | counted | sent (expected this reason) |")
    out.append("|---|---|---|---|")
    names = {
        "instruction": "System 2 instruction link",
        "stats": "supervisor stats link",
        "untrusted": "supervisor: not believed",
    }
    for link, rows in counted.items():
        for why, (got, want) in rows.items():
            out.append(f"| {names[link]} | {why} | {got} | {want} |")
    lat = s1.get("lateness_us") or {}
    broken = [k for k, v in b.get("checks", {}).items() if not v["ok"]]
    out.append("\nSystem 1 over the whole run (run report):\n")
    out.append(
        "| ticks | misses | miss rate | budget | max streak (budget) | lateness p99 us | "
        "every budget held | commands refused by the robot | up exit | clean |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    out.append(
        f"| {s1.get('ticks')} | {s1.get('deadline_misses')} | {s1.get('miss_rate', 0):.4%} | "
        f"{b.get('miss_rate', 0):.2%} | {s1.get('max_consecutive_misses')} "
        f"({b.get('max_consecutive_misses')}) | {lat.get('p99', float('nan')):.0f} | "
        f"{'yes' if b.get('ok') else 'NO: ' + ', '.join(broken)}"
        f" | {report.get('robot', {}).get('commands_refused')} | {code} | "
        f"{report.get('clean_exit')} |"
    )
    out.append(
        f"\nMachine floor on System 1's core: {floors[0].text()}."
        f"\nJudged: {verdict[1]} -> {'PASS' if verdict[0] else 'FAIL'}."
    )
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--untrained", action="store_true", help="random-init brain (faster start)")
    ap.add_argument(
        "--seconds-per-class",
        type=float,
        default=2.0,
        help="pause after each class (its counters settle; System 1 observed)",
    )
    ap.add_argument("--per-class", type=int, default=200, help="frames per class and link")
    ap.add_argument("--flood-seconds", type=float, default=5.0)
    ap.add_argument(
        "--work",
        help="keep the run directory, logs and report here (default: a "
        "new temporary directory, kept)",
    )
    ap.add_argument(
        "--out",
        nargs="?",
        const=str(ROOT / "benchmarks/results/hostile.md"),
        help="write the markdown here (default benchmarks/results/hostile.md)",
    )
    args = ap.parse_args()
    tmp = Path(args.work or tempfile.mkdtemp(prefix="dualsys-hostile-"))
    offline = run_configs(tmp / "configs")
    with FloorBeside(CFG) as beside:  # the machine's floor for as long as the live run lasts
        results, code, report = session(args, tmp / "live")
        floors = [beside.stop()]
    print(f"run report and logs: {tmp / 'live'}", file=sys.stderr)
    counted = live.judge_report(results, report)
    s1 = report.get("system1", {})
    verdict = judge_misses(
        int(s1.get("deadline_misses") or 0),
        int(s1.get("ticks") or 0),
        CFG.budgets.miss_rate,
        floors,
    )
    text = render(args, results + offline, code, report, counted, floors, verdict)
    print(text)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
        Path(args.out).write_text(text)
    ok = all(r.ok for r in results + offline) and code == 0 and verdict[0]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
