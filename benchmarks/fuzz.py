"""Fuzzing at scale: the codec and config-loader properties of tests/reliability, >= 10,000
cases each (hypothesis), with the outcome of every case counted.

A case fails when an exception other than DropError / ConfigError escapes, or when something
that decodes or loads breaks an invariant (non-finite float, wrong shape, bad limits, ...).
Failures are counted and the first few inputs printed, not raised, so one run reports them all.

    .venv/bin/python benchmarks/fuzz.py [--cases 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

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

    t0 = time.perf_counter()
    prop()
    wall = time.perf_counter() - t0
    n = sum(outcomes.values())
    return {"name": name, "cases": n, "wall": wall, "outcomes": outcomes, "failures": failures}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dualsys-fuzz-")) / "fuzzed.toml"
    results = [
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
    cmd = f".venv/bin/python benchmarks/fuzz.py --cases {args.cases} --seed {args.seed}"
    out = header("Fuzzing: codec and config loader (hypothesis)", cmd)
    out += (
        "Each case either decodes/loads and passes every invariant, or is refused with "
        "DropError (reason) / ConfigError (file + key). A failure is any other exception or a "
        "broken invariant.\n\n"
        "| target | cases | wall s | cases/s | failures | outcomes (most common) |\n"
        "|---|---|---|---|---|---|\n"
    )
    for r in results:
        top = r["outcomes"].most_common(8)
        if "ok" not in dict(top):  # always show how many cases were valid
            top.append(("ok", r["outcomes"]["ok"]))
        oc = ", ".join(f"{k} {v}" for k, v in top)
        out += (
            f"| {r['name']} | {r['cases']} | {r['wall']:.1f} | {r['cases'] / r['wall']:.0f} | "
            f"{r['outcomes'].get('FAILURE', 0)} | {oc} |\n"
        )
    found = [f for r in results for f in r["failures"]]
    out += "\nFailures found: " + (
        "none.\n" if not found else "\n" + "".join(f"- {f}\n" for f in found)
    )
    write("fuzz", out)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
