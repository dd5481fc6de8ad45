"""The recorder's MCAP decodes with tools that are not dualsys: the `mcap` package's reader,
JSON decoding, each message validated against its channel's JSON schema (jsonschema), the
camera JPEG decoded by Pillow; and the raw channels still hold the exact bus bytes that
`dualsys replay` reads."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import zmq
from mcap.reader import make_reader
from PIL import Image

from dualsys import config
from dualsys.bus.codec import encode
from dualsys.bus.messages import ActionChunk, CameraFrame, Command, Latent, RobotState
from dualsys.record import RAW_PREFIX, Recorder
from dualsys.replay import read_mcap

CFG = config.load_robot("gr1")


def _messages() -> list[tuple[str, bytes]]:
    n = CFG.n_joints
    q = np.linspace(-0.3, 0.3, n)
    image = np.zeros((128, 128, 3), np.uint8)
    image[:, :64] = (200, 30, 30)  # left half red, right half black
    out = []
    for i in range(10):
        out.append(("state", encode(RobotState(q=q + i * 0.01, dq=q * 0, tau=q * 0), i, "robot")))
        out.append(("command", encode(Command(q=q, dq=q * 0, tick=i), i, "control")))
    out.append(("camera", encode(CameraFrame(camera="head", image=image), 0, "robot")))
    instr = 'wave\x1b[31m "}\u202e <script>'  # hostile text stays data
    vec = np.ones(CFG.system2.latent_dim, np.float32)
    out.append(("latent", encode(Latent(vector=vec, instruction=instr, instruction_id=3), 0, "s2")))
    acts = np.zeros((CFG.policy.chunk_horizon, len(CFG.controlled_indices)), np.float32)
    out.append(("chunk", encode(ActionChunk(actions=acts, dt_ns=20_000_000, chunk_id=7), 0, "p")))
    return out


def test_recording_decodes_without_dualsys(tmp_path: Path) -> None:
    ctx = zmq.Context()
    rec = Recorder(CFG, ctx, tmp_path, tmp_path / "run.mcap")
    msgs = _messages()
    for i, (topic, data) in enumerate(msgs):
        assert rec._record(topic, data, 1_700_000_000_000_000_000 + i * 1_000_000) == 1
    rec.close()
    ctx.term()

    seen: dict[str, list[dict]] = {}
    raw: dict[str, list[bytes]] = {}
    with open(tmp_path / "run.mcap", "rb") as f:
        for schema, channel, m in make_reader(f).iter_messages():
            if channel.message_encoding == "json":
                assert schema.encoding == "jsonschema"
                doc = json.loads(m.data)
                jsonschema.validate(doc, json.loads(schema.data))
                seen.setdefault(channel.topic, []).append(doc)
                assert schema.name.startswith(("foxglove.", "dualsys."))
            else:
                raw.setdefault(channel.topic.removeprefix(RAW_PREFIX), []).append(m.data)
    assert set(seen) == {
        "/robot/joint_states",
        "/system1/command",
        "/tf",
        "/camera/head",
        "/system1/chunk",
        "/system2/latent",
        "/system2/instruction",
    }
    # plottable fields by joint name; values as sent
    js = seen["/robot/joint_states"][0]
    assert js["position"][CFG.joint_names[0]] == pytest.approx(-0.3)
    name = CFG.joint_names[CFG.controlled_indices[0]]
    assert name in seen["/system1/command"][0]["position"]
    # link poses: every robot link, base at the model's base height, unit quaternions
    tf = {t["child_frame_id"]: t for t in seen["/tf"][0]["transforms"]}
    assert len(tf) > 30 and tf["base_link"]["translation"]["z"] == pytest.approx(0.95)
    r = tf[sorted(tf)[-1]]["rotation"]
    assert np.linalg.norm([r[k] for k in "xyzw"]) == pytest.approx(1.0)
    # the camera image is a real JPEG of what was sent
    img = seen["/camera/head"][0]
    pix = np.asarray(Image.open(io.BytesIO(base64.b64decode(img["data"]))))
    assert pix.shape == (128, 128, 3) and pix[:, :60, 0].mean() > 180 and pix[:, 70:].max() < 40
    assert seen["/system2/instruction"][0]["message"] == 'wave\x1b[31m "}\u202e <script>'
    # raw channels: the exact bus bytes, in order, and what replay reads
    for topic in ("state", "command", "camera", "latent", "chunk"):
        assert raw[topic] == [d for t, d in msgs if t == topic]
    replayed = read_mcap(tmp_path / "run.mcap")
    assert [r.data for r in replayed.topics["command"]] == raw["command"]
