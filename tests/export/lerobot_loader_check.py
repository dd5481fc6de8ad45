"""Load an exported dataset with the `lerobot` package's own loader (not a test: run it with a
Python that has `lerobot` installed, e.g. a throwaway venv; dualsys never depends on it).

    python tests/export/lerobot_loader_check.py OUT_DIR [--no-video]

--no-video: where torchvision cannot be installed beside the machine's torch (lerobot 0.4
imports it for video decoding), a stand-in module lets lerobot's metadata and tabular loading
run, and the video is checked with PyAV against the episode time ranges lerobot reads.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1])
    if "--no-video" in sys.argv:
        import importlib.machinery

        class StandIn(types.ModuleType):  # import-time names only; never called
            def __getattr__(self, name: str):
                if name.startswith("__"):
                    raise AttributeError(name)
                sub = StandIn(f"{self.__name__}.{name}")
                sub.__spec__ = importlib.machinery.ModuleSpec(sub.__name__, None)
                sub.__path__ = []
                sys.modules[sub.__name__] = sub
                setattr(self, name, sub)
                return sub

        stand_in = StandIn("torchvision")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
        stand_in.__path__ = []
        sys.modules["torchvision"] = stand_in
        for sub in ("transforms", "transforms.v2", "io"):
            mod = stand_in
            for part in sub.split("."):
                mod = getattr(mod, part)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import av
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata("dualsys/export", root=root)
    print("lerobot metadata:", meta)
    assert meta.total_episodes == len(meta.episodes) and meta.fps > 0
    names = meta.features["observation.state"]["names"]
    print("joints:", len(names), names[:3], "tasks:", list(meta.tasks.index))
    ds = LeRobotDataset("dualsys/export", root=root, download_videos=False)
    print("lerobot dataset:", ds.num_episodes, "episodes,", ds.num_frames, "frames")
    row = ds.hf_dataset[len(ds.hf_dataset) - 1]
    assert tuple(row["observation.state"].shape) == (len(names),)
    assert int(row["task_index"]) in set(meta.tasks["task_index"])
    for key in meta.video_keys:
        for ep in range(meta.total_episodes):
            path = root / meta.get_video_file_path(ep, key)
            with av.open(str(path)) as c:
                times = np.array([f.time for f in c.decode(video=0)])
            e = meta.episodes[ep]
            t0, t1 = e[f"videos/{key}/from_timestamp"], e[f"videos/{key}/to_timestamp"]
            n = int(np.sum((times >= t0 - 1e-6) & (times < t1 - 1e-6)))
            assert n == e["length"], (ep, n, e["length"])
    print("OK: lerobot", __import__("lerobot").__version__, "loads", root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
