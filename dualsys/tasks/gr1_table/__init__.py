"""GR-1 at a table with a red cup and a blue box: expert, kinematics, scoring, lead-ins.

The scene itself (table, objects, sizes, camera mount) is data: `robots/gr1/scene.toml`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dualsys.behaviours.criteria import Score, Trajectory
from dualsys.config import RobotConfig
from dualsys.tasks import register_task_pack
from dualsys.tasks.gr1_table.behaviours import BEHAVIOURS, expert_version
from dualsys.tasks.gr1_table.scoring import EVAL_EPISODE_S, LEAD_S, Scorer, lead_in
from dualsys.tasks.pack import TaskPack


@register_task_pack("gr1_table")
class Gr1Table(TaskPack):
    """The GR-1 tabletop pack (mujoco loads only when kinematics or the expert is built)."""

    behaviours = BEHAVIOURS
    eval_episode_s = EVAL_EPISODE_S
    lead_s = LEAD_S

    def __init__(self, cfg: RobotConfig) -> None:
        super().__init__(cfg)
        self._scorer: Any = None

    def expert_version(self, behaviour: str) -> int:
        return expert_version(behaviour)

    def kinematics(self, model: Any, qpos_adr: np.ndarray) -> Any:
        from dualsys.tasks.gr1_table.kinematics import Kinematics

        return Kinematics(self.cfg, model, qpos_adr)

    def expert(self, kin: Any) -> Any:
        from dualsys.tasks.gr1_table.expert import Expert

        return Expert(self.cfg, kin)

    def scorer(self) -> Any:
        """The pack's `Scorer` (built once)."""
        if self._scorer is None:
            self._scorer = Scorer(self.cfg)
        return self._scorer

    def score(self, behaviour: str, traj: Trajectory) -> Score:
        return self.scorer().score(behaviour, traj)

    def lead_in(self, behaviour: str, index: int) -> str | None:
        return lead_in(behaviour, index)
