"""`dualsys export --format lerobot RUN.mcap OUT`: a recorded run cut into episodes where the
instruction changes or the scene resets, each row the newest state / command / camera frame
at its grid time; warm-up, held and ramp commands and invalid messages never exported.

The recording here is written with the recorder's own MCAP writer from real encoded bus
messages, so the cuts and the values are known exactly; the live path (`dualsys eval
--record` exported) is checked in tests/eval/test_live_eval.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dualsys.bus import CameraFrame, Command, Latent, RobotState
from dualsys.bus.codec import encode
from dualsys.cli import main
from dualsys.export import have_av
from dualsys.record import McapLog
from dualsys.testing.extras import ensure_extra

MS = 1_000_000
T0 = 5_000_000_000  # monotonic ns of the first message
FPS = 50


def ensure_av() -> None:
    """The optional export extra, installed on first use (bin/setup --export)."""
    ensure_extra("export", have_av, "PyAV")


def _write_run(cfg, path: Path, garbage: bool = True) -> dict:
    """4.5 s of a 200 Hz loop: instruction A for 2 s, B for 1.5 s, then a scene reset and B
    again for 1 s. 0.2 s of warm-up commands at the start. Returns the expected pieces."""
    n, cam = cfg.n_joints, cfg.cameras[0]
    log = McapLog(path, cfg.name, {})
    seq = dict.fromkeys(("state", "command", "camera", "latent"), 0)

    def put(topic: str, msg, t: int) -> None:
        seq[topic] += 1
        log.write(topic, encode(msg, seq[topic], topic, t_mono_ns=t), t, t, seq[topic])

    reset_at = 3_500 * MS
    for k in range(900):  # 5 ms ticks
        t = T0 + k * 5 * MS
        rel = t - T0
        sim_t = rel / 1e9 if rel < reset_at else (rel - reset_at) / 1e9
        q = np.full(n, k, np.float64)  # the tick number, so rows can be checked exactly
        put("state", RobotState(q=q, dq=q * 0, tau=q * 0, sim_time=sim_t), t)
        flags = Command.FLAG_WARMUP if rel < 200 * MS else 0
        put("command", Command(q=q + 0.5, dq=q * 0, mode="run", flags=flags), t + MS)
        if k % 20 == 0:  # camera 10 Hz
            img = np.full((cam.height, cam.width, 3), (k // 20) * 5 % 256, np.uint8)
            put("camera", CameraFrame(camera=cam.name, image=img, sim_time=sim_t), t)
        if k % 25 == 0:  # latents 8 Hz
            ident, text = (1, "wave the right hand") if rel < 2_000 * MS else (2, "touch the cup")
            vec = np.zeros(cfg.system2.latent_dim, np.float32)
            put("latent", Latent(vector=vec, instruction_id=ident, instruction=text), t)
    if garbage:  # a damaged message and a command of the wrong width: dropped, not exported
        log.write("command", b"\xc1 not msgpack", T0, T0, 10**6)
        bad = Command(q=np.zeros(n + 3), dq=np.zeros(n + 3), mode="run")
        log.write("command", encode(bad, 10**6 + 1, "x", t_mono_ns=T0 + 3 * MS), T0, T0, 1)
    log.close()
    return {"wave the right hand": 1.8, "touch the cup": [1.5, 1.0]}


def test_recorded_run_exports_as_episodes(cfg, tmp_path) -> None:
    ensure_av()
    from dualsys.behaviours.dataset import DatasetReader

    mcap = tmp_path / "run.mcap"
    _write_run(cfg, mcap)
    out = tmp_path / "lerobot"
    assert main(["export", "--format", "lerobot", str(mcap), str(out)]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["fps"] == FPS and info["total_episodes"] == 3 and info["total_tasks"] == 2
    assert "observation.hands" not in info["features"]  # no scene ground truth in a run
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["tasks"] for e in eps] == [["wave the right hand"], ["touch the cup"]] * 1 + [
        ["touch the cup"]
    ]
    # lengths: A from the first running command (0.2 s) to the switch at 2.0 s; B up to the
    # reset at 3.5 s; B after the reset to the last state (4.495 s); within a row or two
    lengths = [e["length"] for e in eps]
    for got, want in zip(lengths, (1.8, 1.5, 1.0), strict=True):
        assert abs(got - want * FPS) <= 2, lengths
    reader = DatasetReader(out)
    ep = reader.load(0)
    # every row is the newest state and command at its time: q = tick, action = tick + 0.5
    ticks = ep.q[:, 0]
    assert np.all(np.diff(ticks) == 4), ticks[:10]  # 50 Hz rows of a 200 Hz loop
    assert np.array_equal(ep.action[:, 0], ticks + 0.5)
    assert ticks[0] >= 40  # no warm-up command (first 0.2 s = 40 ticks)
    assert 17 <= len(ep.images) <= 19  # the 10 Hz camera over 1.8 s
    assert np.all(np.isfinite(ep.action)) and ep.action.shape[1] == cfg.n_joints
    # dualsys train's feature cache takes it: three episodes, the two instructions as texts
    from dualsys.behaviours.features import FeatureSet, build_cache
    from dualsys.tasks import task_pack

    fs = FeatureSet(build_cache(cfg, out))
    assert sorted(fs.texts) == ["touch the cup", "wave the right hand"]
    assert len(fs.ep_start) == 3 and fs.current_episodes(task_pack(cfg).expert_version).all()
    assert np.array_equal(fs.act[: lengths[0]].numpy()[:, 0], ep.action[:, 0])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "not a readable MCAP"),
        (b"\x89MCAP0\r\n garbage", "not a readable MCAP"),
        (None, "latent messages recorded"),
    ],
)
def test_bad_recordings_are_refused_by_name(cfg, tmp_path, capsys, content, needle) -> None:
    ensure_av()
    mcap = tmp_path / "bad.mcap"
    if content is None:  # a valid MCAP without latents: no instruction, no task
        log = McapLog(mcap, cfg.name, {})
        n = cfg.n_joints
        msg = RobotState(q=np.zeros(n), dq=np.zeros(n), tau=np.zeros(n))
        log.write("state", encode(msg, 1, "robot", t_mono_ns=T0), T0, T0, 1)
        log.close()
    else:
        mcap.write_bytes(content)
    assert main(["export", "--format", "lerobot", str(mcap), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(mcap) in err, err


def test_fps_and_min_seconds_are_checked(cfg, tmp_path, capsys) -> None:
    ensure_av()
    mcap = tmp_path / "run.mcap"
    _write_run(cfg, mcap, garbage=False)
    assert main(["export", str(mcap), str(tmp_path / "a"), "--fps", "0"]) == 2
    assert "--fps 0" in capsys.readouterr().err
    # every piece is shorter than 5 s: nothing to export, said so
    assert main(["export", str(mcap), str(tmp_path / "b"), "--min-seconds", "5"]) == 2
    assert "at least 5 s" in capsys.readouterr().err
    # at 10 rows per second the same three pieces
    assert main(["export", str(mcap), str(tmp_path / "c"), "--fps", "10"]) == 0
    info = json.loads((tmp_path / "c" / "meta" / "info.json").read_text())
    assert info["fps"] == 10 and info["total_episodes"] == 3
