"""`machine_summary`: the cheap machine picture the run report of `dualsys up` includes.

The static checks (well under a second) plus, when `dualsys doctor` ran for this robot before,
its verdict and the floor it measured on the control core, so a broken budget in a run report
says whether the machine or dualsys caused it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dualsys.doctor import checks as checks_mod
from dualsys.doctor.probe import cache_dir
from dualsys.doctor.verdict import UNKNOWN, worst


def last_doctor_path(robot: str) -> Path:
    """Where `dualsys doctor` keeps its latest result for `robot` (besides any --json)."""
    return cache_dir() / f"last-{robot}.json"


def save_last(result: dict) -> Path | None:
    """Keep `result` as the robot's latest doctor result; None when the cache is not writable."""
    path = last_doctor_path(result["robot"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)
    except OSError:
        return None
    return path


def _floors_at(result: dict, core: int, hz: int) -> dict:
    keys = ("p50_us", "p99_us", "p999_us", "max_us", "misses", "ticks", "max_streak", "steal_pct")
    return {
        r["condition"]: {k: r.get(k) for k in keys}
        for r in result.get("results", [])
        if r.get("core") == core and r.get("hz") == hz and "error" not in r
    }


def digest(result: dict, hz: int | None = None) -> dict:
    """The part of a doctor result a run report needs: verdict and floor at `hz` (default the
    control rate the doctor judged; the doctor also probes 500 Hz and 1 kHz, judged with the
    budgets `--control-hz` runs with)."""
    core = result["control_core"]
    hz = result["control_hz"] if hz is None else hz
    at = [v for v in result["verdicts"] if v["hz"] == hz]
    overall = worst([v["verdict"] for v in at]) if at else UNKNOWN
    return {
        "time": result["time"],
        "verdict": overall,
        "control_hz": hz,
        "control_core": core,
        "probe": result["probe"],
        "floor": _floors_at(result, core, hz),
        "verdicts": [v["text"] for v in at],
        "fixes": result["fixes"],
    }


def machine_summary(cfg, quick: bool = True) -> dict:
    """Static checks for `cfg`'s cores, the last doctor result for `cfg.name` if any, and (with
    quick=False) a fresh 1 s quiet probe at the control rate. Never raises on a missing file."""
    cores = sorted({cfg.cores.system1, cfg.cores.system2, cfg.cores.robot})
    chk = checks_mod.run_all(cores)
    out: dict = {
        "checks": {k: {"status": v["status"], "text": v["text"]} for k, v in chk.items()},
        "fifo": chk["scheduler"]["fifo"],
        "preemption": chk["preemption"]["model"],
        "virtual": chk["virtualisation"]["virtual"],
        "control_core_isolated": chk["isolation"]["cores"]
        .get(cfg.cores.system1, {})
        .get("isolated", False),
        "dma_latency_holdable": chk["idle"]["dma_latency"]["can_hold"],
        "last_doctor": None,
    }
    path = last_doctor_path(cfg.name)
    try:
        last = json.loads(path.read_text())
        hz = cfg.rates.control_hz  # a run at --control-hz: the doctor's probe at that rate
        judged = any(isinstance(v, dict) and v.get("hz") == hz for v in last["verdicts"])
        if last.get("robot") == cfg.name and judged:
            age = round(time.time() - path.stat().st_mtime)
            out["last_doctor"] = {"path": str(path), "age_s": age, **digest(last, hz)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent or not ours
        pass
    if not quick:
        from dualsys.doctor.run import run_doctor

        rates = [cfg.rates.control_hz]
        fresh = run_doctor(cfg, 1.0, load=False, rates=rates, progress=lambda s: None)
        out["probe_now"] = digest(fresh)
    return out
