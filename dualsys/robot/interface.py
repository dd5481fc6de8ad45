"""The robot interface every driver implements, and the registry of drivers by name.

Lifecycle (as ros2_control hardware interfaces): `configure()` allocates and validates (may be
slow: loads models, opens connections), `activate()` resets buffers so no stale command is ever
executed, then the loop calls `read_state()`, `write_command()` and `advance(dt)`;
`deactivate()` leaves the robot safe (damped) and releases resources.

Drivers register with `@register_driver("name")`; third-party packages add theirs through the
`dualsys.robot_drivers` entry-point group. The robot config's `[robot] driver` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from dualsys.config import RobotConfig
from dualsys.registry import Registry

#: Command modes, as numbers (Stats values) and as the strings on the bus.
RUN, HOLD, DAMP = 0, 1, 2
MODE_NAMES = ("run", "hold", "damp")
MODES = {name: i for i, name in enumerate(MODE_NAMES)}


@dataclass
class JointState:
    """Measured joint positions, velocities, efforts (config joint order) and robot time (s)."""

    q: np.ndarray
    dq: np.ndarray
    tau: np.ndarray
    t: float = 0.0

    @classmethod
    def zeros(cls, n: int) -> JointState:
        return cls(np.zeros(n), np.zeros(n), np.zeros(n))


@dataclass
class DriverInfo:
    """What a driver can do: whether the loop must advance time, which cameras it renders."""

    simulated: bool
    cameras: tuple[str, ...] = field(default_factory=tuple)


class RobotDriver:
    """Base class of robot drivers (simulation, hardware bridges, test doubles).

    `read_state`, `write_command` and `advance` run in the robot loop's thread (up to 1 kHz):
    they must not block or allocate much. `write_command` receives targets that the robot-side
    safety filter already checked (finite, inside limits).
    """

    NAME: ClassVar[str] = ""

    def __init__(self, cfg: RobotConfig, run_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.n = cfg.n_joints
        self.configured = False
        self.active = False

    @property
    def info(self) -> DriverInfo:
        return DriverInfo(simulated=False)

    def configure(self) -> None:
        """Allocate and validate (slow work belongs here, never in __init__)."""
        self.configured = True

    def activate(self) -> None:
        """Reset buffers and start; the robot holds its measured pose until commanded."""
        if not self.configured:
            raise RuntimeError(f"{type(self).__name__}: activate() before configure()")
        self.active = True

    def read_state(self) -> JointState:
        """The newest measured state (loop thread)."""
        raise NotImplementedError

    def write_command(self, q: np.ndarray, dq: np.ndarray, mode: int) -> None:
        """Apply checked targets: RUN/HOLD track q (with dq feed-forward), DAMP damps only."""
        raise NotImplementedError

    def advance(self, dt: float) -> None:
        """Let `dt` seconds of robot time pass (simulated drivers step; hardware: no-op)."""

    @property
    def state_age_s(self) -> float:
        """Seconds since the newest measured state arrived, on this computer's clock (loop
        thread). 0 for drivers that measure on read; a bridge reports its peer's silence."""
        return 0.0

    def deactivate(self) -> None:
        """Leave the robot safe (damping only) and release resources."""
        self.active = False


#: Robot drivers by name; add one with @register_driver("name") or the entry-point group
#: `dualsys.robot_drivers`.
DRIVERS: Registry[type[RobotDriver]] = Registry(
    "robot driver",
    RobotDriver,
    ("dualsys.robot.bridge", "dualsys.robot.ideal", "dualsys.robot.simulation"),
    "dualsys.robot_drivers",
    "NAME",
)
register_driver = DRIVERS.register
driver_class = DRIVERS.get


def make_driver(cfg: RobotConfig, name: str | None = None, **kwargs) -> RobotDriver:
    """Instantiate the driver the config names (or `name`); not yet configured."""
    return driver_class(name or cfg.driver)(cfg, **kwargs)
