"""Task packs: everything one robot-and-scene task needs that the runtime never does.

A task pack (one package under `dualsys/tasks/`, e.g. `gr1_table`) holds the scripted expert
that demonstrates each behaviour, the kinematics helpers it plans with, the success criteria
that score a run, and the lead-ins an evaluation says first. Its data (scene, phrasings,
recipe, weights) lives beside the robot config in `robots/<robot>/`. A robot config names its
pack (`[task] pack = "gr1_table"`); the learning wing (`dualsys.behaviours`: demonstrations,
training, evaluation) finds it through `TASK_PACKS`, like robot drivers and encoders. System 1,
System 2 and the robot process import none of this (tests/test_import_graph.py).
"""

from __future__ import annotations

from dualsys.config import ConfigError, RobotConfig
from dualsys.registry import Registry
from dualsys.tasks.pack import TaskPack

__all__ = ["TASK_PACKS", "TaskPack", "register_task_pack", "task_pack"]

#: Task packs by name; third-party packs join through the "dualsys.tasks" entry-point group.
TASK_PACKS: Registry[type[TaskPack]] = Registry(
    "task pack", TaskPack, ("dualsys.tasks.gr1_table",), "dualsys.tasks", "pack_name"
)
register_task_pack = TASK_PACKS.register


def task_pack(cfg: RobotConfig) -> TaskPack:
    """The task pack `cfg`'s `[task] pack` names, for that robot.

    Raises ConfigError naming the config file and key: no `[task]` table, or an unknown name
    (with the known packs and close matches)."""
    if not cfg.task_pack:
        raise ConfigError(
            cfg.path, "task.pack", 'no task pack: add [task] pack = "<name>" (dualsys/tasks/)'
        )
    try:
        cls = TASK_PACKS.get(cfg.task_pack)
    except KeyError as exc:
        raise ConfigError(cfg.path, "task.pack", str(exc.args[0])) from None
    return cls(cfg)
