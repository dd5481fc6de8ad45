"""A recorded run (`dualsys up --record`, `dualsys eval --record`) read as episodes for the
LeRobot export (`dualsys export --format lerobot RUN.mcap OUT`).

A recording is one stream, not a list of episodes: states come at the robot's rate, commands
at the control rate, camera frames at the camera rate, and instructions change whenever an
operator (or `dualsys eval`) says something. `RecordingSource` puts the run on a fixed grid
at the dataset rate (default: the config's action rate) and takes, at each grid time, the
newest state, command and camera frame received by then (all stamped on the robot computer's
monotonic clock), so every row shows what the robot knew at that instant.

Episodes are cut where the task changes:
- a new instruction (a Latent whose `instruction_id` differs from the previous one's); the
  task string is that instruction's text;
- a scene reset (the robot's `sim_time` goes backwards, as between `dualsys eval` episodes).
Grid steps before the first latent (no task yet) or where the loop sent no running command
(warm-up, hold, stop ramp) are left out; pieces shorter than `min_seconds` are dropped.
A recording has no scene ground truth, so the export has no hands/objects columns (the
reader fills zeros).

Only the raw bus channels are used, decoded and validated by `dualsys.replay.read_mcap`
(invalid messages are counted there, never exported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualsys.behaviours.dataset import DatasetError, Episode
from dualsys.bus.messages import Command
from dualsys.config import RobotConfig
from dualsys.replay import Recorded, ReplayError, read_mcap

#: Pieces shorter than this are left out (the instant between two instructions).
MIN_SECONDS = 1.0


@dataclass
class _Piece:
    instruction: str
    first: int  # grid indices [first, stop)
    stop: int


def _newest(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the newest item at or before each grid time (-1: none yet)."""
    return np.searchsorted(times, grid, side="right") - 1


class RecordingSource:
    """The episodes of one MCAP recording (same interface as DatasetReader: len, load, info,
    episodes, root)."""

    def __init__(
        self,
        path: str | Path,
        cfg: RobotConfig | None = None,
        fps: int | None = None,
        min_seconds: float = MIN_SECONDS,
    ) -> None:
        """Read and segment `path`; DatasetError naming the file when it holds no episode."""
        self.root = Path(path)
        try:
            rec = read_mcap(self.root)
        except ReplayError as exc:
            raise DatasetError(str(exc)) from None
        self.robot = rec.robot
        self.dropped = rec.dropped
        if cfg is None:
            from dualsys import config

            cfg = config.load_robot(rec.robot or "gr1")
        if rec.robot and rec.robot != cfg.name:
            raise DatasetError(f"{self.root}: recorded robot {rec.robot!r}, config is {cfg.name!r}")
        fps = cfg.rates.action_hz if fps is None else int(fps)
        if not 1 <= fps <= 1000:
            raise DatasetError(f"--fps {fps}: must be 1..1000")
        missing = [t for t in ("state", "command", "camera", "latent") if not rec.topics.get(t)]
        if missing:
            raise DatasetError(
                f"{self.root}: no {', '.join(missing)} messages recorded; a run recorded with "
                "`dualsys up --record` or `dualsys eval --record` has all four"
            )
        n, cam = cfg.n_joints, cfg.cameras[0]
        by_time = lambda items: sorted(items, key=lambda r: r.msg.header.t_mono_ns)  # noqa: E731
        states = [r for r in by_time(rec.topics["state"]) if r.msg.q.shape == (n,)]
        cmds = [
            r
            for r in by_time(rec.topics["command"])
            if r.msg.q.shape == (n,) and not r.msg.flags & (Command.FLAG_WARMUP | Command.FLAG_RAMP)
        ]
        frames = [
            r
            for r in by_time(rec.topics["camera"])
            if r.msg.camera == cam.name and r.msg.image.shape == (cam.height, cam.width, 3)
        ]
        latents = by_time(rec.topics["latent"])
        if not (states and cmds and frames):
            raise DatasetError(
                f"{self.root}: no {cfg.name} states, running commands or {cam.name} camera "
                "frames of the config's shapes"
            )
        self._states, self._cmds, self._frames = states, cmds, frames
        t = lambda items: np.array([r.msg.header.t_mono_ns for r in items], np.int64)  # noqa: E731
        ts, tc, tf, tl = t(states), t(cmds), t(frames), t(latents)
        step = 1_000_000_000 // fps
        start = max(ts[0], tc[0], tf[0], tl[0])
        self.grid = np.arange(start, ts[-1] + 1, step, dtype=np.int64)
        self.si, self.ci, self.fi = (
            _newest(ts, self.grid),
            _newest(tc, self.grid),
            _newest(tf, self.grid),
        )
        li = _newest(tl, self.grid)
        # a command older than two control periods means the loop was not running then
        fresh = (self.grid - tc[self.ci]) <= 2 * 1_000_000_000 // cfg.rates.control_hz
        running = np.array([cmds[i].msg.mode == "run" for i in self.ci]) & fresh
        instr_id = np.array([latents[i].msg.instruction_id for i in li])
        sim_t = np.array([states[i].msg.sim_time for i in self.si])
        cut = np.ones(len(self.grid), bool)
        cut[1:] = (instr_id[1:] != instr_id[:-1]) | (sim_t[1:] < sim_t[:-1]) | ~running[:-1]
        self.fps = fps
        self.pieces: list[_Piece] = []
        bounds = [*np.flatnonzero(cut), len(self.grid)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            keep = np.flatnonzero(running[a:b])
            if not len(keep):
                continue
            a, b = a + keep[0], a + keep[-1] + 1
            if (b - a) / fps >= min_seconds:
                self.pieces.append(_Piece(latents[li[a]].msg.instruction, int(a), int(b)))
        if not self.pieces:
            raise DatasetError(
                f"{self.root}: no stretch of at least {min_seconds:g} s with an instruction and "
                "a running control loop"
            )
        self.info = {"fps": fps, "robot_type": cfg.name, "source": "recording"}
        self.episodes = [
            {"episode_index": i, "instruction": p.instruction, "expert_version": None}
            for i, p in enumerate(self.pieces)
        ]

    def __len__(self) -> int:
        return len(self.pieces)

    def load(self, index: int, images: bool = True) -> Episode:
        """One episode: grid rows `[first, stop)` of its piece."""
        p = self.pieces[index]
        sel = slice(p.first, p.stop)
        si, ci, fi = self.si[sel], self.ci[sel], self.fi[sel]
        kept, image_index = np.unique(fi, return_inverse=True)
        pick = lambda items, idx, f: np.stack([getattr(items[i].msg, f) for i in idx])  # noqa: E731
        frames: list[Recorded] = [self._frames[i] for i in kept]
        T = len(si)
        return Episode(
            behaviour=p.instruction,
            instruction=p.instruction,
            seed=0,
            t=(self.grid[sel] - self.grid[p.first]) / 1e9,
            q=pick(self._states, si, "q"),
            dq=pick(self._states, si, "dq"),
            tau=pick(self._states, si, "tau"),
            action=pick(self._cmds, ci, "q"),
            action_dq=pick(self._cmds, ci, "dq"),
            image_index=image_index.astype(np.int64),
            images=(
                np.stack([f.msg.image for f in frames])
                if images
                else np.zeros((0, 0, 0, 3), np.uint8)
            ),
            image_t=np.array([f.msg.header.t_mono_ns - self.grid[p.first] for f in frames]) / 1e9,
            hands=np.zeros((T, 0, 3), np.float32),
            objects=np.zeros((T, 0, 3), np.float32),
        )
