"""Demonstration generation: expert episodes in worker processes, written as a dataset.

Each worker owns a simulation (MuJoCo model + renderer) and returns an episode's bus wire
frames; the parent decodes them (`EpisodeRecorder`) and writes the dataset. Episodes are
assigned round-robin over the behaviours, phrasings drawn at random from the training set;
everything is deterministic in the base seed.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dualsys.behaviours.dataset import DatasetWriter, EpisodeRecorder
from dualsys.config import RobotConfig

_WORKER: dict = {}


def _init(cfg_path: str) -> None:
    import torch  # noqa: F401  (keep import order stable across workers)

    from dualsys import config
    from dualsys.robot.simulation import Simulation
    from dualsys.tasks import task_pack

    cfg = config.load(cfg_path)
    sim = Simulation(cfg)
    sim.configure()
    sim.activate()
    pack = task_pack(cfg)
    _WORKER.update(
        cfg=cfg, sim=sim, expert=pack.expert(pack.kinematics(sim.model, sim.jmap.qpos_adr))
    )


def _episode(job: tuple[str, str, int, float, float, float]):
    from dualsys.behaviours.rollout import new_setup, run_expert

    behaviour, text, seed, seconds, moving, own = job
    w = _WORKER
    setup = new_setup(w["sim"], w["expert"], behaviour, text, seed, moving, own)
    frames, hands, objs = run_expert(w["sim"], w["expert"], w["cfg"], setup, seconds)
    return behaviour, seed, frames, hands, objs


def jobs(
    n: int,
    phrasings: dict[str, list[str]],
    seed: int,
    seconds: float,
    behaviours: tuple[str, ...],
    moving: float = 0.0,
    own: float = 0.0,
) -> list[tuple[str, str, int, float, float, float]]:
    """The episode list: (behaviour, instruction, seed, seconds, moving, own), round-robin
    over behaviours; `moving`: share of episodes started in motion, `own`: share started still
    near the behaviour's own goal (`rollout.new_setup`)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = behaviours[i % len(behaviours)]
        texts = phrasings[b]
        text = texts[rng.integers(len(texts))]
        out.append((b, text, seed * 100_003 + i, seconds, moving, own))
    return out


def _results(cfg: RobotConfig, job_list, workers: int) -> Iterator:
    if workers <= 1:
        _init(str(cfg.path))
        for job in job_list:
            yield _episode(job)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(str(cfg.path),)) as pool:
        yield from pool.imap(_episode, job_list, chunksize=1)


def generate(
    cfg: RobotConfig,
    out: Path,
    job_list: list[tuple[str, str, int, float, float, float]],
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> DatasetWriter:
    """Run the jobs and write the dataset to `out`; `progress(i)` after each episode."""
    rec = EpisodeRecorder(cfg)
    writer = DatasetWriter(out, cfg)
    for i, (behaviour, seed, frames, hands, objs) in enumerate(_results(cfg, job_list, workers)):
        writer.add(rec.episode(frames, behaviour, seed, hands, objs))
        if progress:
            progress(i)
    writer.close()
    return writer
