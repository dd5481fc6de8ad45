"""`ideal`: a kinematic robot that reaches every target at once. For unit tests only."""

from __future__ import annotations

import numpy as np

from dualsys.robot.interface import DAMP, DriverInfo, JointState, RobotDriver, register_driver


@register_driver("ideal")
class IdealRobot(RobotDriver):
    """Perfect tracking: after `advance(dt)` q equals the last target, dq its finite difference.

    No physics, no cameras. DAMP freezes the pose. Every call is loop-thread safe.
    """

    @property
    def info(self) -> DriverInfo:
        return DriverInfo(simulated=True)

    def configure(self) -> None:
        """Allocate the state and start at the default pose."""
        self._state = JointState.zeros(self.n)
        self._target = self.cfg.limits()["default"].copy()
        self.writes = 0
        super().configure()

    def activate(self) -> None:
        """Start at rest at the default pose."""
        super().activate()
        self._state.q[:] = self.cfg.limits()["default"]
        self._state.dq[:] = 0.0
        self._state.t = 0.0
        self._target[:] = self._state.q

    def read_state(self) -> JointState:
        """The current pose (q is exactly the last target once time advanced)."""
        return self._state

    def write_command(self, q: np.ndarray, dq: np.ndarray, mode: int) -> None:
        """Remember the target (DAMP: keep the current pose)."""
        self.writes += 1
        self._target[:] = self._state.q if mode == DAMP else q

    def advance(self, dt: float) -> None:
        """Jump to the target; dq is the finite difference over dt."""
        s = self._state
        np.subtract(self._target, s.q, out=s.dq)
        s.dq /= dt
        s.q[:] = self._target
        s.t += dt
