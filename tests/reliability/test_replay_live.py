"""A live `dualsys up --record` run replays bit for bit (`dualsys replay`).

The whole system runs for real (MuJoCo robot, System 2, policy, FIFO control loop, recorder)
for a few seconds. Once the loop follows chunks, the test freezes the control process for
80 ms (SIGSTOP/SIGCONT), so a deadline-miss streak latches the miss hold for 1 s: the replay
must reproduce that too. Then every recorded command (loop ticks and the stop ramp) is
recomputed offline through System 1's ControlLoop from the recorded chunks, latents and states
and the tick inputs each Command carries, and compared bit for bit; and the comparison is
shown to fail when one tick input is wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus.messages import Command, Stats
from dualsys.bus.transport import Subscriber
from dualsys.cli import main as cli_main
from dualsys.replay import TickTable, control_run, read_mcap, replay, ticks_from_commands
from dualsys.supervisor import STATUS_SOCKET
from dualsys.system1.control import RUN

CFG = config.load_robot("gr1")
ROOT = Path(__file__).resolve().parents[2]
SECONDS = 8.0
FREEZE_S = 0.08


def _freeze_control_once_running(run_dir: Path, proc: subprocess.Popen, timeout_s: float) -> None:
    """Watch the supervisor's status link; once the control loop has followed chunks (safe
    state "run") for two status snapshots in a row, SIGSTOP it for FREEZE_S."""
    ctx = zmq.Context()
    sub = Subscriber(ctx, f"ipc://{run_dir}/{STATUS_SOCKET}", (Stats,), latest=False)
    try:
        end, running = time.monotonic() + timeout_s, 0
        while running < 2:
            assert time.monotonic() < end, "the control loop never followed a chunk"
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            msg = sub.recv(timeout_ms=200)
            if msg is not None:
                running = running + 1 if msg.values.get("control.safe_state") == RUN else 0
        pid = json.loads((run_dir / "pids.json").read_text())["control"]
        os.kill(pid, signal.SIGSTOP)
        time.sleep(FREEZE_S)
        os.kill(pid, signal.SIGCONT)
    finally:
        sub.close()
        ctx.term()


@pytest.mark.slow
def test_live_up_run_replays_bit_identically(tmp_path: Path, capsys) -> None:
    run_dir, mcap = tmp_path / "run", tmp_path / "run.mcap"
    argv = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--headless"]
    argv += ["--duration", str(SECONDS), "--record", str(mcap), "--untrained"]
    argv += ["--run-dir", str(run_dir)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _freeze_control_once_running(run_dir, proc, timeout_s=60)
        out = proc.communicate(timeout=90)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    ctl = json.loads((run_dir / "control.json").read_text())
    rec = read_mcap(mcap)
    loop_cmds, ramp = control_run(rec)
    assert rec.dropped == 0 and len(ramp) == 50
    rsum = json.loads((run_dir / "recorder.json").read_text())
    assert "command" not in rsum["sequence_gaps"], rsum  # the queue holds the warm-up burst
    assert len(loop_cmds) == ctl["ticks"] - ctl["skipped_periods"]  # a skipped period sends none

    result = replay(CFG, rec)  # the tick table the recorded Commands carry
    print(json.dumps(result.summary()))
    assert result.summary()["tick_inputs"] == "recorded"
    assert result.bit_identical, result.summary()
    assert result.q_max_abs == 0.0 and result.dq_max_abs == 0.0
    assert result.tick_field_mismatches == 0 and result.mode_mismatches == 0

    # the run exercised what makes live replay hard: many chunk hand-overs driving the joints,
    # fresh latents, and a miss-streak hold after the freeze
    table = ticks_from_commands(loop_cmds)
    assert len(np.unique(table.seq["chunk"])) > 10
    assert len(np.unique(table.seq["latent"])) > 20
    held = (table.flags & Command.FLAG_MISS_HOLD) != 0
    assert held.sum() >= 150, "the freeze did not latch the miss hold"
    assert ctl["max_consecutive_misses"] > CFG.budgets.max_consecutive_misses
    moving = np.flatnonzero(np.any(np.diff(result.replayed_q[: len(loop_cmds)], axis=0), axis=1))
    assert len(moving) >= 200 and np.abs(np.diff(result.replayed_q, axis=0)).max() > 1e-3

    # the comparison can fail (source "given": only q, dq and mode are compared, not the tick
    # fields themselves). The untrained policy's targets often saturate the acceleration
    # limits, so a single tick 1 us late may leave every joint's command unchanged; these
    # are the errors inferred tick tables make:
    def altered() -> TickTable:
        t = ticks_from_commands(loop_cmds)
        t.source = "given"
        return t

    k = int(moving[len(moving) // 2]) + 1
    held_more = altered()  # a miss hold where the loop moved
    held_more.flags[k : k + 20] |= Command.FLAG_MISS_HOLD
    assert not replay(CFG, rec, held_more).bit_identical
    late = altered()  # the tick grid 1 ms late from tick k on
    late.t_ns[k:] += 1_000_000
    bad = replay(CFG, rec, late)
    assert not bad.bit_identical and bad.first_mismatch_tick >= loop_cmds[k].tick
    handovers = np.flatnonzero(np.diff(table.seq["chunk"]) != 0) + 1
    j = int(handovers[len(handovers) // 2])
    slow = altered()  # one chunk taken a tick late
    slow.seq["chunk"][j] = slow.seq["chunk"][j - 1]
    bad = replay(CFG, rec, slow)
    assert not bad.bit_identical and bad.first_mismatch_tick >= loop_cmds[j].tick

    # the CLI says the same
    capsys.readouterr()
    assert cli_main(["replay", str(mcap), "--require-identical"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["bit_identical"] and cli["q_max_abs_diff"] == 0.0 and cli["ticks"] == result.ticks
