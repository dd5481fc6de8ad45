"""A recording in the view (`dualsys view run.mcap --save run.rrd`): every topic becomes the
view's entities on the recording's timeline, hostile instruction text stays escaped text; and
the live view's grounding line is System 2's own."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus.codec import decode, encode
from dualsys.bus.messages import Latent
from dualsys.record import Recorder
from tests.view.test_foxglove_mcap import _messages
from tests.view.test_live_view import ensure_viewer, rrd_rows

CFG = config.load_robot("gr1")


def test_view_of_a_recording_saves_an_rrd(tmp_path: Path) -> None:
    ensure_viewer()
    from dualsys.cli import main

    ctx = zmq.Context()
    rec = Recorder(CFG, ctx, tmp_path, tmp_path / "run.mcap")
    for i, (topic, data) in enumerate(_messages()):
        rec._record(topic, data, 1_700_000_000_000_000_000 + i * 1_000_000)
    rec.close()
    ctx.term()
    out = tmp_path / "run.rrd"
    assert main(["view", str(tmp_path / "run.mcap"), "--save", str(out), "--no-serve"]) == 0
    rows, texts = rrd_rows(out)
    assert rows["/camera/head"] == 1
    assert rows["/joints/right_elbow_pitch_joint"] >= 1
    assert rows["/timing/chunk_boundary"] >= 1 and rows["/timing/system2_step"] == 1
    assert len([k for k in rows if k.startswith("/world/robot/") and "/geom" in k]) > 30
    (line,) = texts["/log/instruction"]
    assert "\\x1b[31m" in line and "\\u202e" in line and "\x1b" not in line  # escaped, shown
    # a file that is not a recording: exit 2 naming it
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not mcap")
    assert main(["view", str(bad), "--save", str(tmp_path / "x.rrd"), "--no-serve"]) == 2


def test_grounding_shown_is_system2s(tmp_path: Path) -> None:
    ensure_viewer()
    import rerun as rr

    from dualsys.view.grounding import Grounder
    from dualsys.view.poses import RobotPoses
    from dualsys.view.sink import ViewSink

    if not Grounder.available(CFG):
        pytest.skip("gr1 names no trained System 2 checkpoint / phrasings")
    stream = rr.RecordingStream("test")
    stream.set_sinks(rr.FileSink(str(tmp_path / "g.rrd")))
    sink = ViewSink(CFG, rr, stream, RobotPoses(CFG), live=True)
    sink.grounder = Grounder(CFG)
    vec = np.ones(CFG.system2.latent_dim, np.float32)
    text = "reach for the sky with both arms"
    msg = decode(encode(Latent(vector=vec, instruction=text, instruction_id=5), 1, "s"), (Latent,))
    sink.on_message(msg)
    end = time.monotonic() + 90
    while time.monotonic() < end and not sink.grounder.answers.qsize():
        time.sleep(0.1)
    sink.show_grounding(time.time_ns())
    stream.flush()
    stream.disconnect()
    _, texts = rrd_rows(tmp_path / "g.rrd")
    lines = texts["/log/instruction"]
    assert lines[0] == f"instruction 5: {text}"
    assert "System 2 grounds it as: raise_both_arms (nearest known phrasing" in lines[-1]
