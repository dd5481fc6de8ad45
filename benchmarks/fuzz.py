"""Fuzzing at scale: the codec, config-loader and receiver properties of tests/reliability,
>= 10,000 cases each (hypothesis), with the outcome of every case counted.

Receivers (decode, then apply; tests/reliability/fuzz_receivers.py): the control loop, the
policy process, System 2 and the robot side's command path, each the real component on real
(inproc) ZeroMQ sockets, fed hostile inputs by class (tests/reliability/fuzz_hostile.py).

A case fails when an exception other than DropError / ConfigError escapes, or when something
that decodes, loads or is applied breaks an invariant (non-finite float, wrong shape, a command
outside the limits, ...). Failures are counted and the first few inputs printed, not raised,
so one run reports them all. --out writes the tables to benchmarks/results/fuzz.md.

    .venv/bin/python benchmarks/fuzz.py [--cases 10000] [--seed 0] [--only control,robot] [--out]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import zmq
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _load import header, write  # noqa: E402

from tests.reliability.fuzz_cases import (  # noqa: E402
    any_wire_input,
    check_codec,
    check_config,
    config_mutations,
)
from tests.reliability.fuzz_hostile import CLASSES, hostile  # noqa: E402
from tests.reliability.fuzz_receivers import RIGS  # noqa: E402

PROGRESS_EVERY = 1000


def run(name: str, strategy, check, cases: int, rng_seed: int) -> dict:
    """Run `check` on `cases` generated inputs; count outcomes and failures."""
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    @seed(rng_seed)
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(x) -> None:
        try:
            outcomes[check(x)] += 1
        except Exception as exc:  # a finding: recorded, not raised, so the run goes on
            outcomes["FAILURE"] += 1
            if len(failures) < 5:
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                failures.append(f"{tb} on input {x!r:.300}")
        done = sum(outcomes.values())
        if done % PROGRESS_EVERY == 0:
            print(f"  {name}: {done}/{cases}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    prop()
    wall = time.perf_counter() - t0
    n = sum(outcomes.values())
    return {"name": name, "cases": n, "wall": wall, "outcomes": outcomes, "failures": failures}


def run_receiver(name: str, cases: int, rng_seed: int, tmp: Path) -> dict:
    """Fuzz one receiver rig; outcomes are keyed (case class, outcome)."""
    ctx = zmq.Context()
    rig = RIGS[name](ctx, tmp)
    strategy = st.sampled_from(rig.topics).flatmap(hostile)

    def check(case) -> tuple[str, str]:
        return (case.klass, rig.feed(case))

    try:
        r = run(f"receiver: {name}", strategy, check, cases, rng_seed)
    finally:
        rig.close()
        ctx.term()
    r["topics"] = rig.topics
    return r


def receiver_table(results: list[dict]) -> str:
    """Markdown: per receiver and hostile case class, the outcomes and their counts."""
    out = "| receiver (topics) | case class | cases | outcomes |\n|---|---|---|---|\n"
    for r in results:
        by_class: dict[str, Counter] = {}
        for key, n in r["outcomes"].items():
            klass, outcome = key if isinstance(key, tuple) else ("?", key)
            by_class.setdefault(klass, Counter())[outcome] += n
        label = f"{r['name'].split(': ')[1]} ({', '.join(r['topics'])})"
        for klass in CLASSES:
            oc = by_class.get(klass, Counter())
            text = ", ".join(f"{k} {v}" for k, v in oc.most_common())
            out += f"| {label} | {klass} | {sum(oc.values())} | {text} |\n"
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000, help="cases per target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated receivers (default: all)")
    ap.add_argument("--no-codec", action="store_true", help="skip the codec and config runs")
    ap.add_argument("--out", action="store_true", help="write benchmarks/results/fuzz.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dualsys-fuzz-")) / "fuzzed.toml"
    receivers = [r for r in args.only.split(",") if r] or sorted(RIGS)
    results = (
        []
        if args.no_codec
        else [
            run(
                "codec: decode(any input)",
                any_wire_input(),
                lambda d: check_codec(d, False),
                args.cases,
                args.seed,
            ),
            run(
                "codec: decode(any input, System 1 shapes pinned)",
                any_wire_input(),
                lambda d: check_codec(d, True),
                args.cases,
                args.seed + 1,
            ),
            run(
                "config: load(mutated gr1.toml)",
                config_mutations(),
                lambda t: check_config(t, tmp),
                args.cases,
                args.seed + 2,
            ),
        ]
    )
    rec = [
        run_receiver(name, args.cases, args.seed + 3 + i, tmp.parent)
        for i, name in enumerate(receivers)
    ]
    cmd = f".venv/bin/python benchmarks/fuzz.py --cases {args.cases} --seed {args.seed}"
    out = header("Fuzzing: codec, config loader and receivers (hypothesis)", cmd)
    out += (
        "Each case either decodes/loads and passes every invariant, or is refused with "
        "DropError (reason) / ConfigError (file + key). A failure is any other exception or a "
        "broken invariant.\n\n"
        "| target | cases | wall s | cases/s | failures | outcomes (most common) |\n"
        "|---|---|---|---|---|---|\n"
    )
    for r in results + rec:
        receiver = r in rec
        if receiver:
            total = Counter()
            for (_klass, outcome), n in r["outcomes"].items():
                total[outcome] += n
            r = dict(r, outcomes=total)
        top = r["outcomes"].most_common(8)
        if not receiver and "ok" not in dict(top):  # always show how many cases were valid
            top.append(("ok", r["outcomes"]["ok"]))
        oc = ", ".join(f"{k} {v}" for k, v in top)
        out += (
            f"| {r['name']} | {r['cases']} | {r['wall']:.1f} | {r['cases'] / r['wall']:.0f} | "
            f"{r['outcomes'].get('FAILURE', 0)} | {oc} |\n"
        )
    out += (
        "\nReceivers, decode then apply: every hostile case class and what the receiver did "
        "with it (dropped by the codec with its reason, refused by the receiver with its "
        "reason, or accepted and applied with the receiver's properties holding; "
        "tests/reliability/fuzz_receivers.py).\n\n" + receiver_table(rec)
    )
    found = [f for r in results + rec for f in r["failures"]]
    out += "\nFailures found: " + (
        "none.\n" if not found else "\n" + "".join(f"- {f}\n" for f in found)
    )
    if args.out:
        write("fuzz", out)
    else:
        print(out)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
