"""`dualsys export --format lerobot`: expert demonstrations written as a LeRobotDataset v3
(the published layout: meta/info.json, stats.json, tasks.parquet, episodes parquet, data
parquet, one mp4 per camera), decoded by readers that are not dualsys's (pyarrow, PyAV), and
read back by `dualsys train`'s dataset path with the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dualsys.behaviours.dataset import DatasetReader, DatasetWriter, EpisodeRecorder
from dualsys.export import have_av
from dualsys.tasks import task_pack
from dualsys.testing.extras import ensure_extra

ROOT = Path(__file__).resolve().parents[2]


def ensure_av() -> None:
    """The optional export extra, installed on first use (bin/setup --export)."""
    ensure_extra("export", have_av, "PyAV")


@pytest.fixture(scope="module")
def demo(cfg, sim, tmp_path_factory) -> Path:
    """Two short expert episodes, recorded as `dualsys demo` records them."""
    from dualsys.behaviours.rollout import new_setup, run_expert
    from dualsys.tasks.gr1_table.expert import Expert
    from dualsys.tasks.gr1_table.kinematics import Kinematics

    expert = Expert(cfg, Kinematics(cfg, sim.model, sim.jmap.qpos_adr))
    out = tmp_path_factory.mktemp("demo")
    w = DatasetWriter(out, cfg)
    rec = EpisodeRecorder(cfg)
    for i, b in enumerate(("wave_right_hand", "touch_red_cup")):
        setup = new_setup(sim, expert, b, b.replace("_", " "), seed=i)
        frames, hands, objs = run_expert(sim, expert, cfg, setup, seconds=1.0)
        w.add(rec.episode(frames, b, i, hands, objs))
    w.close()
    return out


def test_export_is_a_lerobot_v3_dataset_and_reads_back(cfg, demo, tmp_path) -> None:
    ensure_av()
    import av

    from dualsys.cli import main

    out = tmp_path / "lerobot"
    assert main(["export", "--format", "lerobot", str(demo), str(out)]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == cfg.rates.action_hz
    assert info["total_episodes"] == 2 and info["total_tasks"] == 2
    feats = info["features"]
    assert feats["observation.state"]["names"] == list(cfg.joint_names)
    assert feats["observation.state"]["shape"] == [cfg.n_joints]
    video = feats["observation.images.head"]
    assert video["dtype"] == "video" and video["info"]["video.fps"] == info["fps"]
    # tasks.parquet: the instruction is the (pandas) index, task_index the column
    tasks = pq.read_table(out / "meta" / "tasks.parquet")
    assert tasks.column("task").to_pylist() == ["wave right hand", "touch red cup"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    eps = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["tasks"] for e in eps] == [["wave right hand"], ["touch red cup"]]
    assert eps[1]["dataset_from_index"] == eps[0]["dataset_to_index"] == eps[0]["length"]
    data = pq.read_table(out / info["data_path"].format(chunk_index=0, file_index=0))
    assert data.num_rows == info["total_frames"] == sum(e["length"] for e in eps)
    ts = np.asarray(data.column("timestamp").to_pylist())
    assert np.allclose(np.diff(ts[: eps[0]["length"]]), 1 / info["fps"])  # LeRobot's sync check
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert len(stats["observation.state"]["mean"]) == cfg.n_joints
    assert np.asarray(stats["observation.images.head"]["mean"]).shape == (3, 1, 1)
    # the video: one frame per data row, at the dataset's rate, decodable by PyAV/FFmpeg
    path = out / info["video_path"].format(
        video_key="observation.images.head", chunk_index=0, file_index=0
    )
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = float(c.streams.video[0].average_rate)
    assert len(frames) == data.num_rows and rate == info["fps"]
    assert frames[0].shape == (cfg.cameras[0].height, cfg.cameras[0].width, 3)

    # read back through the reader dualsys train uses: same numbers, images within the codec
    src, back = DatasetReader(demo), DatasetReader(out)
    assert type(back).__name__ == "LeRobotReader" and len(back) == len(src)
    for i in range(len(src)):
        a, b = src.load(i), back.load(i)
        assert (b.behaviour, b.instruction, b.seed) == (a.behaviour, a.instruction, a.seed)
        for name in ("q", "dq", "tau", "action", "action_dq", "hands", "objects"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert np.array_equal(a.image_index, b.image_index)
        assert b.images.shape == a.images.shape
        err = np.abs(b.images.astype(int) - a.images.astype(int)).mean()
        assert err < 6, err  # lossy video, the same pictures


def test_train_reads_an_exported_dataset(cfg, demo, tmp_path) -> None:
    """dualsys train's feature cache from the LeRobot export equals the one from the demo."""
    ensure_av()
    from dualsys.behaviours.features import FeatureSet, build_cache
    from dualsys.cli import main

    out = tmp_path / "lerobot"
    assert main(["export", str(demo), str(out)]) == 0
    a, b = FeatureSet(build_cache(cfg, demo)), FeatureSet(build_cache(cfg, out))
    assert b.texts == a.texts and b.behaviours == a.behaviours
    assert b.ep_version.tolist() == a.ep_version.tolist() == [2, 1]  # the wave's expert v2
    assert b.current_episodes(task_pack(cfg).expert_version).all()
    for name in ("q", "dq", "act", "img", "ep", "step"):
        assert np.array_equal(getattr(a, name).numpy(), getattr(b, name).numpy()), name
    assert a.vision.shape == b.vision.shape
    cos = (a.vision * b.vision).sum(1) / (a.vision.norm(dim=1) * b.vision.norm(dim=1))
    assert float(cos.min()) > 0.9  # the vision encoder sees the same pictures
