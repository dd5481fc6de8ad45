"""The bridge driver's tcp:// links use CURVE like every other process, or are refused.

The driver (BridgeRobot) binds its state and command links on tcp loopback; an external peer
(BridgePeer, in a thread with its own ZeroMQ context) connects with the robot role's key and
exchanges state and commands end to end. A peer with another role's key or no key is never
heard, and tcp:// bridge links without CURVE are refused before any socket is bound.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus import Publisher, RobotState
from dualsys.bus.curve import BusSecurity, CurveConfig, load_pair
from dualsys.cli import main as cli_main
from dualsys.robot.bridge import BridgePeer, BridgeRobot
from dualsys.robot.interface import RUN
from dualsys.testing.ports import free_ports
from tests.reliability.fuzz_cases import GR1_DATA, dump_toml


def _config(tmp_path: Path, security: dict | None) -> config.RobotConfig:
    data = copy.deepcopy(GR1_DATA)
    if security is not None:
        data["security"] = security
    path = tmp_path / "bridge.toml"
    path.write_text(dump_toml(data))
    return config.load(path)


class _Peer(threading.Thread):
    """The external driver: publishes a fixed state at 100 Hz, keeps the newest command."""

    def __init__(self, cfg: config.RobotConfig, eps: tuple[str, str]) -> None:
        super().__init__(daemon=True)
        self.cfg, self.eps = cfg, eps
        self.stop = threading.Event()
        self.commands: list[np.ndarray] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        ctx = zmq.Context()
        sec = BusSecurity(ctx, self.cfg, binds=False)  # robot role, like the driver
        try:
            peer = BridgePeer(ctx, self.cfg.n_joints, *self.eps, security=sec)
            q = np.asarray(self.cfg.limits()["default"], dtype=np.float64)
            zeros = np.zeros(self.cfg.n_joints)
            while not self.stop.is_set():
                peer.publish(q, zeros, zeros, time.monotonic(), "hold")
                cmd = peer.command()
                if cmd is not None:
                    self.commands.append(np.array(cmd.q))
                time.sleep(0.01)
            peer.close()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            sec.close()
            ctx.term()


def test_bridge_over_curve_end_to_end_and_rogue_state_unheard(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli_main(["keys", "generate", "--out", str(keys)]) == 0
    cfg = _config(tmp_path, {"curve": True, "keys_dir": str(keys)})
    eps = tuple(f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    peer = _Peer(cfg, eps)
    peer.start()
    robot = BridgeRobot(cfg, state_endpoint=eps[0], command_endpoint=eps[1], connect_timeout_s=20)
    rogue_ctx = zmq.Context()
    robot_public = load_pair(keys, "robot", secret=False).public
    rogues = [
        Publisher(  # System 2's key: a role that may not publish robot state
            rogue_ctx,
            eps[0],
            "rogue",
            bind=False,
            curve=CurveConfig(
                client=load_pair(keys, "system2", secret=True), server_public=robot_public
            ),
        ),
        Publisher(rogue_ctx, eps[0], "plain", bind=False),  # no CURVE at all
    ]
    try:
        robot.configure()
        assert robot.sub.sock.curve_server  # the driver's sockets really are CURVE servers
        n = cfg.n_joints
        target = np.asarray(cfg.limits()["default"], dtype=np.float64) + 0.01
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            for r in rogues:
                r.send(RobotState(q=np.full(n, 9.0), dq=np.zeros(n), tau=np.zeros(n), sim_time=0.0))
            robot.write_command(target, np.zeros(n), RUN)
            assert not np.any(robot.read_state().q == 9.0), "a rogue state reached the driver"
            time.sleep(0.01)
        assert peer.error is None, peer.error
        assert peer.commands and np.allclose(peer.commands[-1], target)
        assert robot.state_age_s < 0.5
        assert robot.sub.received > 50  # ~100 Hz for 2 s from the peer, none from the rogues
    finally:
        for r in rogues:
            r.close()
        rogue_ctx.term()
        peer.stop.set()
        peer.join(5)
        if robot.configured:
            robot.deactivate()


def test_bridge_tcp_without_curve_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path, None)
    eps = tuple(f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    robot = BridgeRobot(cfg, state_endpoint=eps[0], command_endpoint=eps[1], connect_timeout_s=1)
    with pytest.raises(config.ConfigError, match="bridge_state link tcp://.*without CURVE"):
        robot.configure()
    with pytest.raises(ValueError, match="tcp:// link .* needs security"):
        BridgePeer(zmq.Context.instance(), cfg.n_joints, *eps)
