"""A dualsys demonstration dataset (dualsys/behaviours/DATASET.md), or a recorded run
(`dualsys.export.recording`), written as a LeRobotDataset v3 (LeRobot's published layout,
codebase_version "v3.0"):

    OUT/meta/info.json                   fps, features (dtype, shape, joint names), paths
    OUT/meta/stats.json                  min/max/mean/std/count per feature (images in [0, 1])
    OUT/meta/tasks.parquet               task (the instruction, pandas index) -> task_index
    OUT/meta/episodes/chunk-000/file-000.parquet   per episode: tasks, length, row range,
                                         video file and time range, dualsys/behaviour, seed,
                                         expert_version
    OUT/data/chunk-000/file-000.parquet  one row per action step (50 Hz), all episodes
    OUT/videos/observation.images.head/chunk-000/file-000.mp4   the head camera at the
                                         dataset fps (each step shows its newest camera frame)

Data columns: observation.state / .velocity / .effort (joint order of the robot config,
named in info.json), action / action.velocity, observation.hands / .objects (flattened;
demonstrations only: a recorded run has no scene ground truth),
observation.image_index (which camera frame a step shows: the camera runs at 10 Hz),
timestamp (frame_index / fps), frame_index, episode_index, index, task_index.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dualsys.behaviours.dataset import DatasetReader, Episode
from dualsys.config import RobotConfig
from dualsys.export.recording import RecordingSource

CODEBASE_VERSION = "v3.0"
CHUNK = "chunk-000"
FILE = "file-000"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
#: One data file and one video file per camera hold every episode up to these sizes (MB).
DATA_MB, VIDEO_MB = 100, 500


def _col(a: np.ndarray) -> pa.Array:
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(len(a), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def _stats(x: np.ndarray) -> dict[str, list]:
    x = x.reshape(len(x), -1).astype(np.float64)
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [len(x)],
    }


def _image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per channel, shaped (3, 1, 1) as LeRobot keeps image statistics, values in [0, 1]."""
    x = frames.reshape(-1, 3).astype(np.float64) / 255.0
    shaped = {k: [[[v]] for v in f(x, 0)] for k, f in (("min", np.min), ("max", np.max))}
    shaped |= {"mean": [[[v]] for v in x.mean(0)], "std": [[[v]] for v in x.std(0)]}
    return shaped | {"count": [len(frames)]}


def _tasks_table(tasks: dict[str, int]) -> pa.Table:
    """tasks.parquet as pandas writes a DataFrame indexed by the task string."""
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()),
                      "task": pa.array(list(tasks), pa.string())})  # fmt: skip
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "pandas_version": "2.2.0",
    }  # fmt: skip
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    cfg: RobotConfig, reader: DatasetReader | RecordingSource, out: Path, progress=None
) -> dict:
    """Write the episodes of `reader` (a demonstration dataset, or a recorded run through
    `RecordingSource`) to `out` (must not exist or be empty). Returns info.json."""
    from dualsys.export.video import VideoWriter

    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new directory")
    fps = int(reader.info.get("fps", cfg.rates.action_hz))
    cam = cfg.cameras[0]
    key = f"observation.images.{cam.name}"
    video_rel = VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
    video = VideoWriter(out / video_rel, cam.width, cam.height, fps)
    tasks: dict[str, int] = {}
    cols: dict[str, list] = {}
    episodes: list[dict] = []
    image_sample: list[np.ndarray] = []
    first = 0
    for i in range(len(reader)):
        ep: Episode = reader.load(i)
        T = len(ep)
        task = tasks.setdefault(ep.instruction, len(tasks))
        t_from = video.frames / fps
        for k in range(T):
            video.add(ep.images[ep.image_index[k]])
        image_sample.append(ep.images[:: max(1, len(ep.images) // 4)])
        part = {
            "observation.state": ep.q, "observation.velocity": ep.dq,
            "observation.effort": ep.tau, "action": ep.action, "action.velocity": ep.action_dq,
            "observation.hands": ep.hands.reshape(T, -1),
            "observation.objects": ep.objects.reshape(T, -1),
            "observation.image_index": ep.image_index.astype(np.int64),
            "timestamp": (np.arange(T) / fps).astype(np.float32),
            "frame_index": np.arange(T, dtype=np.int64),
            "episode_index": np.full(T, i, np.int64),
            "index": np.arange(first, first + T, dtype=np.int64),
            "task_index": np.full(T, task, np.int64),
        }  # fmt: skip
        if ep.hands.size == 0:  # a recorded run has no scene ground truth
            del part["observation.hands"], part["observation.objects"]
        for k, v in part.items():
            cols.setdefault(k, []).append(v)
        episodes.append({
            "episode_index": i, "tasks": [ep.instruction], "length": T,
            "data/chunk_index": 0, "data/file_index": 0,
            "dataset_from_index": first, "dataset_to_index": first + T,
            f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
            f"videos/{key}/from_timestamp": t_from, f"videos/{key}/to_timestamp": t_from + T / fps,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            "dualsys/behaviour": ep.behaviour, "dualsys/seed": int(ep.seed),
            "dualsys/expert_version": _version(reader.episodes[i]),
        })  # fmt: skip
        first += T
        if progress:
            progress(i + 1, len(reader))
    video.close()
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    table = pa.table({k: _col(v) if v.ndim == 2 else pa.array(v) for k, v in arrays.items()})
    (out / DATA_PATH.format(chunk_index=0, file_index=0)).parent.mkdir(parents=True)
    pq.write_table(table, out / DATA_PATH.format(chunk_index=0, file_index=0))
    meta = out / "meta"
    (meta / "episodes" / CHUNK).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), meta / "episodes" / CHUNK / f"{FILE}.parquet")
    pq.write_table(_tasks_table(tasks), meta / "tasks.parquet")
    stats = {k: _stats(v) for k, v in arrays.items()}
    stats[key] = _image_stats(np.concatenate(image_sample))
    (meta / "stats.json").write_text(json.dumps(stats) + "\n")
    info = _info(cfg, reader, arrays, key, video.codec, fps, len(episodes), first, len(tasks))
    (meta / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _version(meta: dict) -> int | None:
    """The expert version of a demonstration; None for a recorded run (no expert made it)."""
    v = meta.get("expert_version", 1)
    return None if v is None else int(v)


def _scene_features(reader, arrays) -> dict:
    """hands / objects features of a demonstration dataset (a recorded run has none)."""
    if "observation.hands" not in arrays:
        return {}
    hands = [
        f"{p}_{a}" for p in ("left_palm", "right_palm", "left_tip", "right_tip") for a in "xyz"
    ]
    n_obj = arrays["observation.objects"].shape[1] // 3
    objects = reader.info.get("features", {}).get("observation.objects", {}).get("names")
    objects = [f"{o}_{a}" for o in (objects or [f"object{j}" for j in range(n_obj)]) for a in "xyz"]
    return {
        k: {"dtype": "float32", "shape": [arrays[k].shape[1]], "names": names}
        for k, names in (("observation.hands", hands), ("observation.objects", objects))
    }


def _info(cfg, reader, arrays, key, codec, fps, n_eps, n_frames, n_tasks) -> dict:
    names = list(cfg.joint_names)
    cam = next(c for c in cfg.cameras if key.endswith(c.name))

    def vec(k: str, names_: list[str] | None = None) -> dict:
        return {"dtype": "float32", "shape": [arrays[k].shape[1]], "names": names_}

    scalar = {"dtype": "int64", "shape": [1], "names": None}
    features = {
        "observation.state": vec("observation.state", names),
        "observation.velocity": vec("observation.velocity", names),
        "observation.effort": vec("observation.effort", names),
        "action": vec("action", names),
        "action.velocity": vec("action.velocity", names),
        "observation.image_index": scalar,
        **_scene_features(reader, arrays),
        key: {
            "dtype": "video",
            "shape": [cam.height, cam.width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": cam.height,
                "video.width": cam.width,
                "video.codec": codec,
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        },  # fmt: skip
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": scalar,
        "episode_index": scalar,
        "index": scalar,
        "task_index": scalar,
    }
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": cfg.name,
        "total_episodes": n_eps,
        "total_frames": n_frames,
        "total_tasks": n_tasks,
        "chunks_size": 1000,
        "data_files_size_in_mb": DATA_MB,
        "video_files_size_in_mb": VIDEO_MB,
        "fps": fps,
        "splits": {"train": f"0:{n_eps}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
        "dualsys": {
            "camera_fps": cfg.rates.camera_hz,
            "controlled_joints": [names[i] for i in cfg.controlled_indices],
            "source": str(reader.root),
        },
    }
