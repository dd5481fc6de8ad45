"""A LeRobotDataset v3 directory read as dualsys episodes, so `dualsys train --data DIR`
trains on it (`dualsys.behaviours.dataset.DatasetReader` hands v3 directories to this).

Joint vectors are mapped by the names in info.json to the robot config's joint order (a
joint the config names but the dataset lacks is an error naming both). Columns dualsys
writes and other datasets may lack: velocities and efforts (zeros), hands and objects
(zeros), observation.image_index (every step's own video frame), dualsys/behaviour (the
task string), dualsys/seed (0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dualsys.behaviours.dataset import DatasetError, Episode
from dualsys.config import RobotConfig


def is_lerobot_v3(root: str | Path) -> bool:
    """True when root/meta/info.json says codebase_version v3.x."""
    info = Path(root) / "meta" / "info.json"
    try:
        return str(json.loads(info.read_text()).get("codebase_version", "")).startswith("v3")
    except (OSError, ValueError, AttributeError):
        return False


def _matrix(table, name: str) -> np.ndarray | None:
    if name not in table.column_names:
        return None
    col = table.column(name).combine_chunks()
    return np.asarray(col.values.to_numpy(zero_copy_only=False)).reshape(len(col), -1)


class LeRobotReader:
    """Episodes of a LeRobotDataset v3 (same interface as DatasetReader: len, load)."""

    def __init__(self, root: str | Path, cfg: RobotConfig | None = None) -> None:
        self.root = Path(root)
        meta = self.root / "meta"
        try:
            self.info = json.loads((meta / "info.json").read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{meta / 'info.json'}: unreadable: {exc}") from None
        files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{meta / 'episodes'}: no episode tables (chunk-*/file-*.parquet)")
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        rows.sort(key=lambda r: r["episode_index"])
        self.episodes = [
            {
                "episode_index": r["episode_index"],
                "behaviour": r.get("dualsys/behaviour") or (r.get("tasks") or [""])[0],
                "instruction": (r.get("tasks") or [""])[0],
                "tasks": r.get("tasks") or [],
                "length": r["length"],
                "seed": r.get("dualsys/seed") or 0,
                "expert_version": r.get("dualsys/expert_version") or 1,
                "_row": r,
            }
            for r in rows
        ]
        self.fps = float(self.info["fps"])
        self.video_keys = [k for k, f in self.info["features"].items() if f["dtype"] == "video"]
        self._names = self.info["features"]["observation.state"].get("names")
        self.cfg = cfg
        self._tables: dict[Path, object] = {}
        self._videos: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.episodes)

    def _path(self, template_key: str, **fmt) -> Path:
        return self.root / self.info[template_key].format(**fmt)

    def _order(self, width: int) -> np.ndarray:
        """Column of each config joint in the dataset's vectors."""
        if self.cfg is None:
            return np.arange(width)
        names = self._names if isinstance(self._names, list) else None
        if names is None:  # unnamed: only a vector of the robot's width is taken as is
            if width != self.cfg.n_joints:
                raise DatasetError(
                    f"{self.root}: observation.state has {width} unnamed values, "
                    f"robot {self.cfg.name} has {self.cfg.n_joints} joints"
                )
            return np.arange(width)
        missing = [n for n in self.cfg.joint_names if n not in names]
        if missing:
            raise DatasetError(
                f"{self.root}: info.json observation.state lacks joints of "
                f"{self.cfg.name}: {missing[:6]}"
            )
        return np.array([names.index(n) for n in self.cfg.joint_names])

    def load(self, index: int, images: bool = True) -> Episode:
        """One episode by index (images: the first video's frames the steps show)."""
        meta = self.episodes[index]
        r = meta["_row"]
        path = self._path(
            "data_path", chunk_index=r["data/chunk_index"], file_index=r["data/file_index"]
        )
        if path not in self._tables:
            if not path.is_file():
                raise DatasetError(f"{path}: data file missing")
            self._tables = {path: pq.read_table(path)}  # one file at a time in memory
        tb = self._tables[path].slice(r["dataset_from_index"], r["length"])
        q = _matrix(tb, "observation.state")
        act = _matrix(tb, "action")
        if q is None or act is None:
            raise DatasetError(f"{path}: needs observation.state and action columns")
        order = self._order(q.shape[1])
        T = len(q)

        def joints(name: str) -> np.ndarray:
            m = _matrix(tb, name)
            return m[:, order] if m is not None else np.zeros((T, len(order)), np.float32)

        hands = _matrix(tb, "observation.hands")
        objects = _matrix(tb, "observation.objects")
        step_img = (
            tb.column("observation.image_index").to_numpy()
            if "observation.image_index" in tb.column_names
            else np.arange(T)
        )
        imgs, image_t, image_index = (
            self._images(r, T, step_img)
            if images
            else (np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0), np.zeros(T, np.int64))
        )
        return Episode(
            behaviour=meta["behaviour"],
            instruction=meta["instruction"],
            seed=int(meta["seed"]),
            t=np.arange(T) / self.fps,
            q=q[:, order],
            dq=joints("observation.velocity"),
            tau=joints("observation.effort"),
            action=act[:, order],
            action_dq=joints("action.velocity"),
            image_index=image_index,
            images=imgs,
            image_t=image_t,
            hands=hands.reshape(T, 4, 3) if hands is not None else np.zeros((T, 4, 3), np.float32),
            objects=(
                objects.reshape(T, -1, 3)
                if objects is not None
                else np.zeros((T, 2, 3), np.float32)
            ),
        )

    def _images(self, r: dict, T: int, step_img: np.ndarray):
        """Frames of the episode's steps; a camera frame shown by several steps is kept once."""
        from dualsys.export.video import read_frames

        if not self.video_keys:
            raise DatasetError(f"{self.root}: no video feature to train the vision pathway on")
        key = self.video_keys[0]
        path = self._path(
            "video_path",
            video_key=key,
            chunk_index=r[f"videos/{key}/chunk_index"],
            file_index=r[f"videos/{key}/file_index"],
        )
        if path not in self._videos:
            if not path.is_file():
                raise DatasetError(f"{path}: video file missing")
            self._videos = {path: read_frames(path)}
        frames, times = self._videos[path]
        t0 = float(r[f"videos/{key}/from_timestamp"])
        want = t0 + np.arange(T) / self.fps  # the frame each step shows, by time
        idx = np.clip(np.searchsorted(times, want - 0.5 / self.fps), 0, len(times) - 1)
        first = np.unique(step_img, return_index=True)[1]  # first step showing each frame
        kept = idx[first]
        image_index = np.searchsorted(np.unique(step_img), step_img)
        return frames[kept], want[first] - t0, image_index.astype(np.int64)
