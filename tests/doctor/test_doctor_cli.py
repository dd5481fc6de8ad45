"""`dualsys doctor` end to end: real probes, the table, the JSON, the FIFO-refused fallback,
and `machine_summary` picking up the last result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dualsys import config
from dualsys.doctor import machine_summary

CFG = config.load_robot("gr1")


def _doctor(tmp: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
    cmd = [*prefix, sys.executable, "-m", "dualsys.cli", "doctor", "--robot", "gr1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_doctor_writes_table_and_json(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "doc.json"
    r = _doctor(tmp_path, "--seconds", "1", "--json", str(out))
    assert r.returncode in (0, 1), r.stderr  # 1 only when the floor cannot hold a budget
    assert "verdict per budget" in r.stdout and "fixes:" in r.stdout
    assert "loaded" in r.stderr and "Hz" in r.stderr  # progress while probing
    doc = json.loads(out.read_text())
    for key in ("robot", "checks", "probe", "results", "verdicts", "verdict", "fixes", "notes"):
        assert key in doc, key
    for key in ("scheduler", "preemption", "isolation", "smt", "governor", "idle",
                "virtualisation", "rt_throttling", "rt_tasks"):  # fmt: skip
        assert key in doc["checks"], key
    cores = sorted({CFG.cores.system1, CFG.cores.system2, CFG.cores.robot})
    want = {(c, hz, cond) for c in cores for hz in (CFG.rates.control_hz, 500, 1000)
            for cond in ("quiet", "loaded")}  # fmt: skip
    assert {(x["core"], x["hz"], x["condition"]) for x in doc["results"]} == want
    assert not doc["errors"]
    budgets = {v["budget"] for v in doc["verdicts"] if v["hz"] == CFG.rates.control_hz}
    assert budgets == {"miss_rate", "max_consecutive_misses", "spin_margin_us"}
    # the run report's summary picks the result up from the doctor's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    summary = machine_summary(CFG)
    assert summary["last_doctor"]["verdict"] == doc["verdict"]
    assert set(summary["last_doctor"]["floor"]) == {"quiet", "loaded"}
    assert summary["checks"]["scheduler"]["text"]
    # 1 kHz is judged with the budgets `dualsys up --control-hz 1000` runs with, and a run at
    # that rate finds the doctor's verdict and floor at that rate
    at_1k = {v["budget"]: v for v in doc["verdicts"] if v["hz"] == 1000}
    fast = config.load(CFG.path, config.rate_overrides(CFG, 1000))
    assert at_1k["spin_margin_us"]["limit"] == fast.budgets.spin_margin_us == 200
    assert at_1k["max_consecutive_misses"]["limit"] == fast.budgets.max_consecutive_misses == 25
    run_1k = machine_summary(fast)["last_doctor"]
    assert run_1k["control_hz"] == 1000 and set(run_1k["floor"]) == {"quiet", "loaded"}
    assert run_1k["verdicts"] == [v["text"] for v in at_1k.values()]
    assert all("spin margin 200 µs" in t for t in run_1k["verdicts"] if "spin" in t)
    odd = config.load(CFG.path, config.rate_overrides(CFG, 250))  # a rate the doctor never probed
    assert machine_summary(odd)["last_doctor"] is None


def test_doctor_without_fifo_rights_falls_back_and_says_so(tmp_path: Path) -> None:
    # as root, drop CAP_SYS_NICE so FIFO is really refused (RLIMIT_RTPRIO is 0 here);
    # without setpriv, --no-fifo exercises the same fallback
    drop = os.geteuid() == 0 and shutil.which("setpriv")
    prefix = ("setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", "--") if drop else ()
    args = ["--seconds", "0.5", "--no-load", "--control-rate-only", "--json", "d.json"]
    r = _doctor(tmp_path, *[a if a != "d.json" else str(tmp_path / a) for a in args],
                *([] if drop else ["--no-fifo"]), prefix=prefix)  # fmt: skip
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["probe"]["fifo"] is False
    assert all(x["fifo"] is False and "error" not in x for x in doc["results"])
    assert {x["condition"] for x in doc["results"]} == {"quiet"}
    assert "normal scheduling" in r.stdout
    if drop:
        assert doc["checks"]["scheduler"]["fifo"] is False
        assert "SCHED_FIFO 80 refused" in r.stdout
        assert any("SCHED_FIFO unavailable" in n for n in doc["notes"])


def test_machine_summary_ignores_a_hostile_doctor_cache(tmp_path: Path, monkeypatch) -> None:
    """A cache file that is not the doctor's result (garbage, wrong shapes) never breaks the
    run report: the summary says there is no doctor result."""
    from dualsys.doctor.summary import last_doctor_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = last_doctor_path(CFG.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    for text in ("\x00\xff not json", "[]", '"x"', "{}", '{"robot": "gr1", "verdicts": [1, "a"]}',
                 '{"robot": "gr1", "verdicts": 7}', '{"robot": "gr1", "verdicts": [{"hz": 200}]}',
                 '{"robot": "gr1", "verdicts": [{"hz": 200, "verdict": "holds"}]}'):  # fmt: skip
        path.write_text(text)
        assert machine_summary(CFG)["last_doctor"] is None, text
