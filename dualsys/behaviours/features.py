"""Frozen-encoder features of a demonstration dataset, computed once and cached.

Training System 2's fusion head jointly with System 1's policy only needs the outputs of the
frozen encoders: the MiniLM embedding of each instruction and the MobileNetV2 pooled features
of each camera frame. `build_cache` computes them with the very encoder classes the System 2
service runs (`TextEncoder`, `VisionEncoder`) and stores them with the tabular arrays in one
npz file (`features.npz` in the dataset directory), so training never touches images.
`build_pixel_cache` stores the frames area-downsampled for the fusion head's spatial pathway
(`pixels.npz`, uint8, same frame order) in a file of its own, so adding it never recomputes
the MobileNet features. `build_object_cache` stores the scene objects' ground-truth positions
per row (`objects.npz`), the target of the training-only auxiliary loss that teaches the
spatial pathway where the objects are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dualsys.behaviours.dataset import DatasetReader
from dualsys.config import RobotConfig

CACHE_NAME = "features.npz"
CACHE_VERSION = 1
PIXEL_CACHE_NAME = "pixels.npz"
OBJECT_CACHE_NAME = "objects.npz"


def build_pixel_cache(
    data: str | Path, side: int, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Every camera frame of the dataset as (3, side, side) uint8 (`to_pixels`), cached."""
    from dualsys.system2.vision import to_pixels

    reader = DatasetReader(data)
    path = Path(data) / PIXEL_CACHE_NAME
    if path.exists():
        with np.load(path) as z:
            if int(z["episodes"]) == len(reader) and z["pixels"].shape[-1] == side:
                return path
    out = []
    for i in range(len(reader)):
        out.extend(to_pixels(im, side) for im in reader.load(i).images)
        if progress:
            progress(i + 1, len(reader))
    np.savez(path, episodes=len(reader), pixels=np.stack(out))
    return path


def build_object_cache(
    data: str | Path, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Every row's object centre positions (rows, n_objects, 3) float32 (m, world), cached."""
    reader = DatasetReader(data)
    path = Path(data) / OBJECT_CACHE_NAME
    if path.exists():
        with np.load(path) as z:
            if int(z["episodes"]) == len(reader):
                return path
    out = []
    for i in range(len(reader)):
        out.append(reader.load(i, images=False).objects.astype(np.float32))
        if progress:
            progress(i + 1, len(reader))
    np.savez(path, episodes=len(reader), objects=np.concatenate(out))
    return path


def build_cache(
    cfg: RobotConfig,
    data: str | Path,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 40,
) -> Path:
    """Compute (or reuse, when up to date) the feature cache of a dataset; returns its path."""
    from dualsys.system2.text import TextEncoder
    from dualsys.system2.vision import VisionEncoder

    reader = DatasetReader(data)
    path = Path(data) / CACHE_NAME
    if path.exists():
        with np.load(path) as z:
            if int(z["version"]) == CACHE_VERSION and int(z["episodes"]) == len(reader):
                return path
    text, vision = TextEncoder("cpu"), VisionEncoder("cpu")
    ctrl = cfg.controlled_indices
    texts: dict[str, int] = {}
    cols: dict[str, list] = {k: [] for k in ("q", "dq", "act", "img", "ep", "step")}
    vis, ep_text, ep_beh, ep_start = [], [], [], []
    n_rows = n_imgs = 0
    for i in range(len(reader)):
        ep = reader.load(i)
        ep_text.append(texts.setdefault(ep.instruction, len(texts)))
        ep_beh.append(ep.behaviour)
        ep_start.append(n_rows)
        with torch.inference_mode():
            for b in range(0, len(ep.images), batch):
                x = torch.cat([vision.preprocess(im) for im in ep.images[b : b + batch]])
                vis.append(vision.model.pooled(x).numpy().astype(np.float16))
        cols["q"].append(ep.q.astype(np.float32))
        cols["dq"].append(ep.dq.astype(np.float32))
        cols["act"].append(ep.action[:, ctrl].astype(np.float32))
        cols["img"].append(ep.image_index + n_imgs)
        cols["ep"].append(np.full(len(ep), i))
        cols["step"].append(np.arange(len(ep)))
        n_rows += len(ep)
        n_imgs += len(ep.images)
        if progress:
            progress(i + 1, len(reader))
    emb = np.stack([text.embed(t)[0] for t in texts])
    np.savez(
        path,
        version=CACHE_VERSION,
        episodes=len(reader),
        text_emb=emb,
        texts=np.array(json.dumps(list(texts))),
        ep_text=np.array(ep_text),
        ep_behaviour=np.array(json.dumps(ep_beh)),
        ep_start=np.array(ep_start),
        vision=np.concatenate(vis),
        **{k: np.concatenate(v) for k, v in cols.items()},
    )
    return path


class FeatureSet:
    """The cached arrays, as torch tensors, with per-row indices for batching."""

    def __init__(self, path: str | Path) -> None:
        with np.load(path) as z:
            self.text_emb = torch.from_numpy(z["text_emb"])
            self.texts = json.loads(str(z["texts"]))
            self.ep_text = torch.from_numpy(z["ep_text"])
            self.behaviours = json.loads(str(z["ep_behaviour"]))
            self.ep_start = torch.from_numpy(z["ep_start"])
            self.vision = torch.from_numpy(z["vision"].astype(np.float32))
            self.q = torch.from_numpy(z["q"])
            self.dq = torch.from_numpy(z["dq"])
            self.act = torch.from_numpy(z["act"])
            self.img = torch.from_numpy(z["img"])
            self.ep = torch.from_numpy(z["ep"])
            self.step = torch.from_numpy(z["step"])
        self.ep_len = torch.bincount(self.ep)
        #: expert version each episode was demonstrated with (meta/episodes.jsonl; 1 if absent)
        self.ep_version = torch.ones(len(self.ep_len), dtype=torch.int64)
        eps = Path(path).parent / "meta" / "episodes.jsonl"
        meta = []
        if eps.is_file():
            meta = [json.loads(line) for line in eps.read_text().splitlines() if line]
        elif (Path(path).parent / "meta" / "episodes").is_dir():  # a LeRobotDataset v3
            meta = DatasetReader(Path(path).parent).episodes
        if len(meta) == len(self.ep_len):
            self.ep_version = torch.tensor([m.get("expert_version", 1) for m in meta])
        #: (phrasings, text_dim) side features of `texts` (`add_side_features`), or None
        self.text_side: torch.Tensor | None = None
        #: behaviour of each phrasing in `texts` (from the episodes, or `add_phrasings`)
        self.text_behaviour = [""] * len(self.texts)
        for ep, t in enumerate(self.ep_text.tolist()):
            self.text_behaviour[t] = self.behaviours[ep]
        #: (frames, 3, P, P) uint8 frames of the spatial pathway, when the pixel cache exists
        self.pixels = self._side_cache(
            Path(path).parent / PIXEL_CACHE_NAME, "pixels", len(self.vision)
        )
        #: (rows, n_objects, 3) object centres, when the object cache exists
        self.objects = self._side_cache(
            Path(path).parent / OBJECT_CACHE_NAME, "objects", len(self.q)
        )

    def _side_cache(self, path: Path, key: str, rows: int) -> torch.Tensor | None:
        """Array `key` of a cache file beside features.npz, if it was made for this dataset."""
        if not path.exists():
            return None
        with np.load(path) as z:
            if int(z["episodes"]) == len(self.ep_len) and len(z[key]) == rows:
                return torch.from_numpy(z[key])
        return None

    def behaviour_of_text(self) -> list[str]:
        """The behaviour each phrasing (index into `texts`) stands for."""
        return list(self.text_behaviour)

    def add_phrasings(
        self, phrasings: dict[str, list[str]], embed: Callable[[str], np.ndarray]
    ) -> int:
        """Add phrasings (behaviour -> texts) the demonstrations were not recorded with;
        `embed(text)` gives the frozen encoder's (dim,) embedding. Training may then draw
        them for episodes of their behaviour. Returns how many phrasings were new.

        Raises ValueError for a phrasing already known under another behaviour."""
        new = 0
        for b, texts in phrasings.items():
            for t in texts:
                if t in self.texts:
                    other = self.text_behaviour[self.texts.index(t)]
                    if other != b:
                        raise ValueError(
                            f"phrasing {t!r} given for {b} but demonstrated for {other}"
                        )
                    continue
                e = torch.tensor(np.asarray(embed(t), np.float32)).reshape(1, -1)
                self.text_emb = torch.cat([self.text_emb, e])
                self.texts.append(t)
                self.text_behaviour.append(b)
                new += 1
        return new

    def add_side_features(self, side: Callable[[str], np.ndarray]) -> None:
        """The side feature of every phrasing (`TextEncoder.side`), for a fusion head trained
        with it. Call after the last `add_phrasings`."""
        rows = [np.asarray(side(t), np.float32) for t in self.texts]
        self.text_side = torch.from_numpy(np.stack(rows))

    def __len__(self) -> int:
        return len(self.q)

    def current_episodes(self, expert_version: Callable[[str], int]) -> torch.Tensor:
        """(episodes,) bool: demonstrated with the expert's current version of the behaviour
        (`expert_version`: the task pack's, `dualsys.tasks.TaskPack.expert_version`)."""
        now = torch.tensor([expert_version(b) for b in self.behaviours])
        return self.ep_version == now

    @classmethod
    def merged(cls, paths: list[str | Path]) -> FeatureSet:
        """One FeatureSet over several caches (datasets), indices offset, phrasings shared."""
        sets = [cls(p) for p in paths]
        out = sets[0]
        for fs in sets[1:]:
            n_rows, n_img, n_ep = len(out), len(out.vision), len(out.ep_start)
            remap = []
            for t in fs.texts:
                if t not in out.texts:
                    out.texts.append(t)
                    out.text_behaviour.append(fs.text_behaviour[len(remap)])
                    out.text_emb = torch.cat([out.text_emb, fs.text_emb[len(remap)][None]])
                remap.append(out.texts.index(t))
            out.ep_text = torch.cat([out.ep_text, torch.as_tensor(remap)[fs.ep_text]])
            out.behaviours = out.behaviours + fs.behaviours
            out.ep_version = torch.cat([out.ep_version, fs.ep_version])
            out.ep_start = torch.cat([out.ep_start, fs.ep_start + n_rows])
            out.vision = torch.cat([out.vision, fs.vision])
            if out.pixels is not None and fs.pixels is not None:
                out.pixels = torch.cat([out.pixels, fs.pixels])
            else:
                out.pixels = None
            if out.objects is not None and fs.objects is not None:
                out.objects = torch.cat([out.objects, fs.objects])
            else:
                out.objects = None
            for k in ("q", "dq", "act", "step"):
                setattr(out, k, torch.cat([getattr(out, k), getattr(fs, k)]))
            out.img = torch.cat([out.img, fs.img + n_img])
            out.ep = torch.cat([out.ep, fs.ep + n_ep])
        out.ep_len = torch.bincount(out.ep)
        return out
