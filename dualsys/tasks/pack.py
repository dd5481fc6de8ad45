"""The interface of a task pack (`dualsys.tasks`): what the learning wing asks of it."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dualsys.behaviours.criteria import Score, Trajectory
from dualsys.config import RobotConfig


class TaskPack:
    """One robot-and-scene task, bound to a robot config. Subclasses register by name
    (`@register_task_pack("name")`) and fill in the class attributes and methods below."""

    pack_name: ClassVar[str] = ""
    #: The behaviours the expert performs (names are the dataset's, phrasings' and scorer's keys).
    behaviours: ClassVar[tuple[str, ...]] = ()
    #: Length (s) of an evaluated episode, offline and live.
    eval_episode_s: ClassVar[float] = 6.0
    #: How long (s) a lead-in instruction (`lead_in`) is said before the evaluated one.
    lead_s: ClassVar[float] = 0.0

    def __init__(self, cfg: RobotConfig) -> None:
        self.cfg = cfg

    def expert_version(self, behaviour: str) -> int:
        """The current version of the expert's demonstration of `behaviour` (datasets record it;
        training leaves out episodes of an older one)."""
        return 1

    def kinematics(self, model: Any, qpos_adr: np.ndarray) -> Any:
        """Forward/inverse kinematics on a scratch copy of a compiled MuJoCo model; its
        `hands_batch(q)` gives the (T, 2, 3) palms and (T, 2, 3) fingertips a `Trajectory` holds."""
        raise NotImplementedError

    def expert(self, kin: Any) -> Any:
        """The scripted expert: `.plan(behaviour, q_start, objects)` gives a joint-space plan;
        `.default` and `.limits` are the robot's default pose and joint limits, `.behaviours`
        the pack's, `.rest_behaviour` the one that returns to the default pose, and
        `.start_jitter` (n_joints,) which joints a still start perturbs around the default."""
        raise NotImplementedError

    def score(self, behaviour: str, traj: Trajectory) -> Score:
        """Success of one recorded run of `behaviour`."""
        raise NotImplementedError

    def lead_in(self, behaviour: str, index: int) -> str | None:
        """The instruction said for `lead_s` before episode `index` of `behaviour`, or None."""
        return None
