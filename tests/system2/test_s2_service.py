"""`dualsys system2` as its own process over real ZeroMQ sockets: rate, determinism,
instructions, bad inputs dropped and counted, signals, summary."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import zmq
from s2_helpers import Feeder, StatsListener, start_system2

from dualsys import cli, config
from dualsys.bus import CameraFrame, Instruction, Latent, Publisher, RobotState, Stats, Subscriber
from dualsys.bus.codec import encode
from dualsys.system2.client import new_instruction_id, send_instruction

CFG = config.load_robot("gr1")
R = CFG.rates
STATS_KEYS = {
    "rate_hz", "steps", "step_p50_ms", "step_p99_ms", "text_ms_p50", "vision_ms_p50",
    "fusion_ms_p50", "instruction_id", "dropped", "frame_age_ms",
}  # fmt: skip


def _collect(sub: Subscriber, seconds: float) -> list[Latent]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        msg = sub.recv(100)
        if msg is not None:
            out.append(msg)
    return out


def _rate(latents: list[Latent]) -> float:
    t = [m.header.t_mono_ns for m in latents]
    return (len(t) - 1) / ((t[-1] - t[0]) / 1e9)


def _cos_dist(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"system2 did not stop within 10 s of signal {sig}:\n{out}")
    return out


@pytest.mark.slow
@pytest.mark.timing
def test_service_rate_instructions_bad_inputs_and_summary(tmp_path) -> None:
    run = tmp_path
    feeder = Feeder(CFG, run).start()
    ctx = zmq.Context()
    listener = StatsListener(ctx, CFG, run)
    os.environ["DUALSYS_SUPERVISED"] = "1"
    try:
        proc = start_system2(run, "--untrained")
    finally:
        del os.environ["DUALSYS_SUPERVISED"]
    latents = Subscriber(ctx, CFG.endpoint("latent", run), (Latent,), latest=False)
    try:
        hello = listener.wait_hello(60)
        assert hello is not None, f"no Hello from system2:\n{proc.poll()}"
        assert (hello.role, hello.robot, hello.latent_dim, hello.n_joints) == (
            "system2",
            "gr1",
            CFG.system2.latent_dim,
            CFG.n_joints,
        )

        # Rate, measured at the receiver over 5 s (header send times).
        got = _collect(latents, 5.0)
        rate = _rate(got)
        assert R.system2_min_hz <= rate <= R.system2_max_hz * 1.02, f"rate {rate:.2f} Hz"
        # The feeder's frame and state never change: same inputs give the same latent.
        assert all(np.array_equal(got[0].vector, m.vector) for m in got[1:])
        first = got[-1]
        assert first.vector.shape == (CFG.system2.latent_dim,)
        assert first.instruction == CFG.system2.default_instruction and first.instruction_id == 0
        assert 0 < first.frame_t_mono_ns <= first.header.t_mono_ns
        assert 0 < first.state_t_mono_ns <= first.header.t_mono_ns

        # Supervised: SIGINT is the supervisor's business, the service keeps serving.
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None and len(_collect(latents, 0.5)) >= 3

        # A new instruction is adopted and clearly changes the latent.
        ident, adopted = send_instruction(CFG, run, "pick up the red cup", timeout_s=5)
        assert adopted is not None and adopted.instruction == "pick up the red cup"
        assert _cos_dist(first.vector, adopted.vector) > 0.1

        # Bad instructions are refused, counted, and the current one stays.
        bad = Publisher(ctx, CFG.endpoint("instruction", run), "bad", bind=False)
        good_id = new_instruction_id()
        for _ in range(50):  # until connected: a valid one comes back in a latent
            bad.send(Instruction(text="walk to the door", id=good_id))
            if any(m.instruction_id == good_id for m in _collect(latents, 0.1)):
                break
        bad.send(Instruction(text="", id=good_id + 1))
        bad.send(Instruction(text="x" * (CFG.system2.max_instruction_chars + 1), id=good_id + 2))
        bad.send(Instruction(text="wave\x00now", id=good_id + 3))
        bad.send(Stats(process="x", values={}))
        bad.send_raw(b"\x93garbage")
        # Bad frames and states, one per service step (CONFLATE keeps only the newest).
        feeder.pause()
        cam = feeder.camera_pub
        for data in (
            b"\xc1not msgpack",
            encode(CameraFrame(camera="head", image=np.zeros((64, 64, 3), np.uint8)), 10**6, "x"),
        ):
            cam.send_raw(data)
            time.sleep(2.5 / R.system2_target_hz)
        q = CFG.limits()["default"].copy()
        q[3] = np.nan
        n = CFG.n_joints
        feeder.state_pub.send(RobotState(q=q, dq=np.zeros(n), tau=np.zeros(n)))
        time.sleep(2.5 / R.system2_target_hz)
        feeder.state_pub.send(RobotState(q=np.zeros(10), dq=np.zeros(10), tau=np.zeros(10)))
        time.sleep(2.5 / R.system2_target_hz)
        # Over 1 s without a good frame (> budgets.latent_stale_ms): no latent is published.
        assert 4 * 2.5 / R.system2_target_hz * 1000 > CFG.budgets.latent_stale_ms
        while latents.recv(0) is not None:  # drop those queued while inputs were still fresh
            pass
        during = _collect(latents, 0.3)
        feeder.resume()
        after = _collect(latents, 1.0)
        assert not during, f"{len(during)} latents published from stale inputs"
        assert len(after) >= 8
        assert all(m.instruction_id == good_id for m in after)
        bad.close()

        listener.poll(600)
        values = listener.stats[-1].values
        assert set(values) >= STATS_KEYS
        assert values["instruction_id"] == good_id
        assert values["dropped"] >= 9
    finally:
        out = _stop(proc)
        latents.close()
        listener.sub.close()
        ctx.destroy(linger=0)
        feeder.close()
    assert proc.returncode == 0, out
    summary = json.loads((run / "system2.json").read_text())
    for key in ("rate_hz", "steps", "step_ms", "text_ms", "vision_ms", "fusion_ms", "cpus"):
        assert key in summary, key
    assert summary["instruction"] == "walk to the door" and summary["encoder"].startswith("builtin")
    assert summary["text_ms"]["uncached_p50"] > summary["text_ms"]["cached_p50"] > 0
    assert summary["cpus"] == [CFG.cores.system2]
    assert summary["stale_skips"] >= 3
    dropped = summary["dropped"]
    for reason in (
        "instruction.empty",
        "instruction.too_long",
        "instruction.not_text",
        "instruction.wrong_type",
        "instruction.malformed",
        "camera.malformed",
        "camera.wrong_shape",
        "state.nonfinite",
        "state.wrong_shape",
    ):
        assert dropped.get(reason, 0) >= 1, (reason, dropped)


@pytest.mark.slow
def test_say_cli_then_standalone_sigint_is_a_clean_stop(tmp_path, capsys) -> None:
    feeder = Feeder(CFG, tmp_path).start()
    ctx = zmq.Context()
    listener = StatsListener(ctx, CFG, tmp_path)
    proc = start_system2(tmp_path, "--untrained", "--duration", "60")
    try:
        assert listener.wait_hello(60) is not None
        rc = cli.main(["say", "wave", "with the right hand", "--run-dir", str(tmp_path)])
        assert rc == 0
        assert "adopted by System 2" in capsys.readouterr().out
    finally:
        out = _stop(proc, signal.SIGINT)
        listener.sub.close()
        ctx.destroy(linger=0)
        feeder.close()
    assert proc.returncode == 0, out
    summary = json.loads((tmp_path / "system2.json").read_text())
    assert summary["steps"] >= 2 and summary["instruction"] == "wave with the right hand"


def test_missing_fusion_checkpoint_without_flag_exits_2(tmp_path) -> None:
    # gr1.toml ships trained weights: a copy with the fusion checkpoint emptied
    toml = tmp_path / "nockpt.toml"
    text = config.load_robot("gr1").path.read_text()
    toml.write_text(re.sub(r'(?m)^checkpoint = "[^"]*"', 'checkpoint = ""', text))
    # the run directory must hold only dualsys's own files: not the config
    proc = start_system2(tmp_path / "run", "--robot", str(toml))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "no fusion checkpoint" in out and "--untrained" in out
