"""The demonstration dataset: bus frames in, a LeRobot-like directory out (see DATASET.md).

`EpisodeRecorder` takes an episode's wire frames (bytes, exactly what the processes send),
decodes each with `dualsys.bus.decode` (same validation as a live receiver: types, shapes,
finiteness) and assembles the episode. `DatasetWriter` writes episodes as parquet (tabular
part, one row per action step) plus one compressed npz of camera frames per episode, and the
meta files; `load_episode` / `DatasetReader` read them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dualsys.bus import CameraFrame, Command, Instruction, RobotState, decode
from dualsys.config import RobotConfig
from dualsys.scene import scene_of
from dualsys.tasks import task_pack

CODEBASE_VERSION = "dualsys-1.0 (LeRobot v2.0 layout)"
CHUNK_SIZE = 1000


class DatasetError(ValueError):
    """A dataset directory is missing files or is inconsistent; names the file."""


@dataclass
class Episode:
    """One decoded episode (arrays per action step; images per camera frame)."""

    behaviour: str
    instruction: str
    seed: int
    t: np.ndarray  # (T,)
    q: np.ndarray  # (T, n)
    dq: np.ndarray
    tau: np.ndarray
    action: np.ndarray  # (T, n) commanded positions
    action_dq: np.ndarray
    image_index: np.ndarray  # (T,) index of the newest camera frame at each step
    images: np.ndarray  # (F, H, W, 3) uint8
    image_t: np.ndarray  # (F,)
    hands: np.ndarray  # (T, 4, 3) palms left/right, middle fingertips left/right
    objects: np.ndarray  # (T, k, 3)

    def __len__(self) -> int:
        return len(self.t)


class EpisodeRecorder:
    """Rebuilds an episode from bus wire frames (decoded and validated by the bus codec)."""

    def __init__(self, cfg: RobotConfig) -> None:
        n = cfg.n_joints
        cam = cfg.cameras[0]
        self.shapes = {
            "state": {"q": (n,), "dq": (n,), "tau": (n,)},
            "command": {"q": (n,), "dq": (n,)},
            "frame": {"image": (cam.height, cam.width, 3)},
        }
        self.accept = (Instruction, RobotState, Command, CameraFrame)

    def decode(self, frames: list[bytes]) -> tuple[str, list, list, list]:
        """Wire frames -> (instruction, states, commands, camera frames); DropError on bad data."""
        text, states, cmds, cams = "", [], [], []
        for data in frames:
            msg = decode(data, accept=self.accept, shapes=self.shapes)
            if isinstance(msg, Instruction):
                text = msg.text
            elif isinstance(msg, RobotState):
                states.append(msg)
            elif isinstance(msg, Command):
                cmds.append(msg)
            else:
                cams.append(msg)
        if len(states) != len(cmds) or not states or not cams:
            raise ValueError(
                f"episode frames incomplete: {len(states)} states, {len(cmds)} commands, "
                f"{len(cams)} camera frames"
            )
        return text, states, cmds, cams

    def episode(self, frames, behaviour: str, seed: int, hands, objects) -> Episode:
        """Assemble an Episode from wire frames plus ground-truth palm/object positions."""
        text, states, cmds, cams = self.decode(frames)
        t = np.array([s.header.t_mono_ns for s in states]) / 1e9
        image_t = np.array([c.header.t_mono_ns for c in cams]) / 1e9
        idx = np.searchsorted(image_t, t, side="right") - 1
        return Episode(
            behaviour=behaviour,
            instruction=text,
            seed=seed,
            t=t,
            q=np.stack([s.q for s in states]),
            dq=np.stack([s.dq for s in states]),
            tau=np.stack([s.tau for s in states]),
            action=np.stack([c.q for c in cmds]),
            action_dq=np.stack([c.dq for c in cmds]),
            image_index=np.maximum(idx, 0),
            images=np.stack([c.image for c in cams]),
            image_t=image_t,
            hands=np.asarray(hands, np.float32),
            objects=np.asarray(objects, np.float32),
        )


def _paths(root: Path, index: int) -> tuple[Path, Path]:
    chunk = f"chunk-{index // CHUNK_SIZE:03d}"
    return (
        root / "data" / chunk / f"episode_{index:06d}.parquet",
        root / "images" / chunk / f"episode_{index:06d}.npz",
    )


def _col(a: np.ndarray) -> pa.Array:
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(len(a), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def write_episode(root: Path, index: int, ep: Episode, task_index: int, first: int) -> None:
    """Write one episode's parquet and npz files."""
    data, img = _paths(root, index)
    data.parent.mkdir(parents=True, exist_ok=True)
    img.parent.mkdir(parents=True, exist_ok=True)
    T = len(ep)
    table = pa.table({
        "timestamp": pa.array(ep.t.astype(np.float32)),
        "frame_index": pa.array(np.arange(T, dtype=np.int64)),
        "episode_index": pa.array(np.full(T, index, np.int64)),
        "index": pa.array(np.arange(first, first + T, dtype=np.int64)),
        "task_index": pa.array(np.full(T, task_index, np.int64)),
        "observation.state": _col(ep.q),
        "observation.velocity": _col(ep.dq),
        "observation.effort": _col(ep.tau),
        "observation.image_index": pa.array(ep.image_index.astype(np.int64)),
        "observation.hands": _col(ep.hands),
        "observation.objects": _col(ep.objects),
        "action": _col(ep.action),
        "action.velocity": _col(ep.action_dq),
    })  # fmt: skip
    pq.write_table(table, data)
    np.savez_compressed(img, head=ep.images, timestamp=ep.image_t.astype(np.float32))


def _arr(table: pa.Table, name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        flat = col.values.to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), *shape) if shape else flat.reshape(len(col), -1)
    return col.to_numpy()


class DatasetReader:
    """Reads a dataset directory written by `DatasetWriter` (a LeRobotDataset v3 directory
    is read by `dualsys.export.lerobot_read.LeRobotReader` instead, same interface)."""

    def __new__(cls, root: str | Path):
        from dualsys.export.lerobot_read import LeRobotReader, is_lerobot_v3

        if cls is DatasetReader and is_lerobot_v3(root):
            return LeRobotReader(root)
        return super().__new__(cls)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info = self.root / "meta" / "info.json"
        if not info.is_file():
            raise DatasetError(f"{info}: not found; is {self.root} a dualsys demo dataset?")
        self.info = json.loads(info.read_text())
        eps = self.root / "meta" / "episodes.jsonl"
        self.episodes = [json.loads(line) for line in eps.read_text().splitlines() if line]

    def __len__(self) -> int:
        return len(self.episodes)

    def load(self, index: int, images: bool = True) -> Episode:
        """One episode by index."""
        meta = self.episodes[index]
        data, img = _paths(self.root, meta["episode_index"])
        if not data.is_file():
            raise DatasetError(f"{data}: episode file missing")
        tb = pq.read_table(data)
        if images:
            with np.load(img) as z:
                imgs, image_t = z["head"], z["timestamp"].astype(np.float64)
        else:
            imgs, image_t = np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0)
        return Episode(
            behaviour=meta["behaviour"],
            instruction=meta["instruction"],
            seed=meta["seed"],
            t=_arr(tb, "timestamp").astype(np.float64),
            q=_arr(tb, "observation.state"),
            dq=_arr(tb, "observation.velocity"),
            tau=_arr(tb, "observation.effort"),
            action=_arr(tb, "action"),
            action_dq=_arr(tb, "action.velocity"),
            image_index=_arr(tb, "observation.image_index"),
            images=imgs,
            image_t=image_t,
            hands=_arr(tb, "observation.hands", (4, 3)),
            objects=_arr(tb, "observation.objects", (-1, 3)),
        )


class DatasetWriter:
    """Appends episodes to a dataset directory and keeps its meta files current."""

    def __init__(self, root: str | Path, cfg: RobotConfig) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.pack = task_pack(cfg)
        (self.root / "meta").mkdir(parents=True, exist_ok=True)
        self.episodes: list[dict] = []
        self.tasks: dict[str, int] = {}
        self.frames = 0

    def add(self, ep: Episode) -> int:
        """Write an episode; returns its index."""
        index = len(self.episodes)
        task = self.tasks.setdefault(ep.instruction, len(self.tasks))
        write_episode(self.root, index, ep, task, self.frames)
        self.frames += len(ep)
        self.episodes.append({
            "episode_index": index, "behaviour": ep.behaviour, "instruction": ep.instruction,
            "tasks": [ep.instruction], "length": len(ep), "seed": ep.seed,
            "expert_version": self.pack.expert_version(ep.behaviour),
        })  # fmt: skip
        return index

    def close(self) -> None:
        """Write meta/info.json, meta/episodes.jsonl and meta/tasks.jsonl."""
        cfg, r = self.cfg, self.cfg.rates
        cam = cfg.cameras[0]
        n = cfg.n_joints
        objects = scene_of(cfg).object_names
        feats = {
            "observation.state": {"dtype": "float32", "shape": [n], "names": list(cfg.joint_names)},
            "observation.velocity": {"dtype": "float32", "shape": [n]},
            "observation.effort": {"dtype": "float32", "shape": [n]},
            "observation.image_index": {"dtype": "int64", "shape": [1]},
            "observation.hands": {"dtype": "float32", "shape": [4, 3],
                                  "names": ["left_palm", "right_palm", "left_tip", "right_tip"]},
            "observation.objects": {"dtype": "float32", "shape": [len(objects), 3],
                                    "names": list(objects)},
            "observation.images.head": {"dtype": "image", "shape": [cam.height, cam.width, 3],
                                        "fps": r.camera_hz, "storage": "images/*.npz:head"},
            "action": {"dtype": "float32", "shape": [n], "names": list(cfg.joint_names)},
            "action.velocity": {"dtype": "float32", "shape": [n]},
            "timestamp": {"dtype": "float32", "shape": [1]},
        }  # fmt: skip
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": cfg.name,
            "fps": r.action_hz,
            "camera_fps": r.camera_hz,
            "total_episodes": len(self.episodes),
            "total_frames": self.frames,
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNK_SIZE,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "images_path": "images/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.npz",
            "controlled_joints": [cfg.joint_names[i] for i in cfg.controlled_indices],
            "features": feats,
        }
        meta = self.root / "meta"
        (meta / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        lines = [json.dumps(e) for e in self.episodes]
        (meta / "episodes.jsonl").write_text("\n".join(lines) + "\n")
        tasks = [json.dumps({"task_index": i, "task": t}) for t, i in self.tasks.items()]
        (meta / "tasks.jsonl").write_text("\n".join(tasks) + "\n")
