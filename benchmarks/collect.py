"""Collect every benchmark's table (benchmarks/results/*.md) into benchmarks/RESULTS.md.

.venv/bin/python benchmarks/collect.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "bus",
    "loop",
    "alloc",
    "tick_compiled",
    "loop_ref",
    "tick_live",
    "floor",
    "interp",
    "policy",
    "seams",
    "sim",
    "system2",
    "fleet",
    "view",
    "fuzz",
    "hostile",
    "soak",
]
INTRO = """# dualsys benchmark results

Every table comes from one run of the script named in its heading, with dualsys and its
baseline measured side by side in that run, on a 2-vCPU shared VM (no GPU). Tails vary from run
to run on a shared machine; ratios within one table are the point. Re-run a script to refresh
its table, then `python benchmarks/collect.py`.
"""


def main() -> None:
    """Write RESULTS.md from the per-benchmark tables."""
    parts = {p.stem: p.read_text().strip() for p in sorted((HERE / "results").glob("*.md"))}
    names = [n for n in ORDER if n in parts] + sorted(set(parts) - set(ORDER))
    text = INTRO + "".join(f"\n\n<!-- {n} -->\n{parts[n]}\n" for n in names)
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS.md'} ({', '.join(names)})")


if __name__ == "__main__":
    main()
