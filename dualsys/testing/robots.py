"""Robot test helpers: a recording robot, and an external bridge peer process.

- `RecordingRobot` (driver "recording"): the ideal kinematic robot that also keeps the last
  `capacity` commands it was given (fixed arrays, no growing lists), so a team can assert what
  reached "the hardware".
- `python -m dualsys.testing.robots --robot gr1 --run-dir DIR [--duration S]` runs an external
  driver process behind the `bridge` driver: an ideal robot that publishes RobotState at
  cfg.rates.state_hz and follows the Commands it receives. It is what a vendor-SDK process
  looks like, and what the bridge tests run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import numpy as np
import zmq

from dualsys import config
from dualsys.robot.bridge import BridgePeer, bridge_endpoints
from dualsys.robot.ideal import IdealRobot
from dualsys.robot.interface import MODES, register_driver


@register_driver("recording")
class RecordingRobot(IdealRobot):
    """Ideal robot that records the last `capacity` (q, dq, mode) writes in ring buffers."""

    capacity = 4096

    def configure(self) -> None:
        """Allocate the ring buffers."""
        super().configure()
        self.q_log = np.zeros((self.capacity, self.n))
        self.dq_log = np.zeros((self.capacity, self.n))
        self.mode_log = np.zeros(self.capacity, dtype=np.int8)

    def write_command(self, q: np.ndarray, dq: np.ndarray, mode: int) -> None:
        """Record, then behave as the ideal robot."""
        i = self.writes % self.capacity
        self.q_log[i], self.dq_log[i], self.mode_log[i] = q, dq, mode
        super().write_command(q, dq, mode)

    def recorded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, dq, mode) of the recorded writes, oldest first."""
        k = min(self.writes, self.capacity)
        order = (np.arange(k) + self.writes - k) % self.capacity
        return self.q_log[order], self.dq_log[order], self.mode_log[order]


def run_bridge_peer(robot: str, run_dir: str, duration: float = 0.0) -> int:
    """An external robot process (ideal robot) speaking the bridge endpoints of run_dir."""
    cfg = config.load_robot(robot)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    ctx = zmq.Context()
    state_ep, cmd_ep = bridge_endpoints(run_dir)
    peer = BridgePeer(ctx, cfg.n_joints, state_ep, cmd_ep)
    robot_ = IdealRobot(cfg)
    robot_.configure()
    robot_.activate()
    dt = 1.0 / cfg.rates.state_hz
    mode = "hold"
    commands = 0
    t0 = time.monotonic()
    deadline = t0
    while not stop and (duration <= 0 or time.monotonic() - t0 < duration):
        deadline += dt
        time.sleep(max(0.0, deadline - time.monotonic()))
        cmd = peer.command()
        if cmd is not None:
            commands += 1
            mode = cmd.mode
            dq = cmd.dq if cmd.dq.size else np.zeros(cfg.n_joints)
            robot_.write_command(cmd.q, dq, MODES.get(cmd.mode, MODES["hold"]))
        robot_.advance(dt)
        s = robot_.read_state()
        peer.publish(s.q, s.dq, s.tau, s.t, mode)
    peer.close()
    ctx.term()
    print(f"bridge peer: {commands} commands", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line of the bridge peer."""
    p = argparse.ArgumentParser(prog="python -m dualsys.testing.robots")
    p.add_argument("--robot", default="gr1")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--duration", type=float, default=0.0)
    a = p.parse_args(argv)
    return run_bridge_peer(a.robot, a.run_dir, a.duration)


if __name__ == "__main__":
    sys.exit(main())
