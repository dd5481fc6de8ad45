"""`bridge`: the robot is an external process that speaks the bus (how a vendor SDK plugs in).

The external driver process publishes `RobotState` and subscribes to `Command`, on two bridge
endpoints that this driver binds (default `ipc://{run}/bridge_state.sock` and
`ipc://{run}/bridge_command.sock`; pass tcp:// endpoints for a robot computer on the network:
they use CURVE from `[security]`, links `bridge_state` / `bridge_command` of dualsys/bus/roles.py).
dualsys keeps its robot-side safety (soft start, watchdog, velocity monitor, limits) in front
of the bridge. `BridgePeer` is the external side, for teams writing that process in Python.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus import Command, Publisher, RobotState, Subscriber
from dualsys.bus.curve import BusSecurity, CurveConfig
from dualsys.bus.limits import message_limits, receive_spec
from dualsys.config import RobotConfig
from dualsys.robot.interface import MODE_NAMES, DriverInfo, JointState, RobotDriver, register_driver


def bridge_endpoints(run_dir: str | Path) -> tuple[str, str]:
    """Default (state, command) endpoints of the bridge in a run directory."""
    return f"ipc://{run_dir}/bridge_state.sock", f"ipc://{run_dir}/bridge_command.sock"


@register_driver("bridge")
class BridgeRobot(RobotDriver):
    """dualsys side of the bridge: newest peer state in, checked commands out.

    read_state / write_command never block (loop-thread safe). `state_age_s` says how old the
    newest peer state is; `configure` waits up to `connect_timeout_s` for the first one. When
    the peer goes silent for longer than the command timeout, the robot process holds (the
    peer receives "hold" commands) and stops publishing RobotState until states flow again.
    """

    def __init__(
        self,
        cfg: RobotConfig,
        run_dir: str | Path | None = None,
        state_endpoint: str | None = None,
        command_endpoint: str | None = None,
        connect_timeout_s: float = 10.0,
        ctx: zmq.Context | None = None,
    ) -> None:
        super().__init__(cfg, run_dir)
        if run_dir is None and (state_endpoint is None or command_endpoint is None):
            raise ValueError("bridge driver: pass run_dir or both bridge endpoints")
        default_state, default_cmd = bridge_endpoints(run_dir) if run_dir else ("", "")
        self.state_endpoint = state_endpoint or default_state
        self.command_endpoint = command_endpoint or default_cmd
        self.connect_timeout_s = connect_timeout_s
        self._ctx = ctx
        self._state = JointState.zeros(self.n)
        self._last_rx = 0.0
        self.tick = 0

    @property
    def info(self) -> DriverInfo:
        return DriverInfo(simulated=False)

    def configure(self) -> None:
        """Bind both bridge endpoints and wait for the peer's first state."""
        self._own_ctx = self._ctx is None
        self._ctx = self._ctx or zmq.Context()
        try:  # CURVE on tcp:// bridge links like every other process (robot key role)
            self.sec = BusSecurity(self._ctx, self.cfg)
            state_curve = self.sec.curve(self.state_endpoint, bind=True, link="bridge_state")
            cmd_curve = self.sec.curve(self.command_endpoint, bind=True, link="bridge_command")
        except Exception:
            if getattr(self, "sec", None) is not None:
                self.sec.close()
            if self._own_ctx:
                self._ctx.term()
            raise
        self.sub = Subscriber(
            self._ctx,
            self.state_endpoint,
            (RobotState,),
            bind=True,
            latest=True,
            **receive_spec(self.cfg, "state"),
            curve=state_curve,
        )
        self.pub = Publisher(
            self._ctx, self.command_endpoint, source="robot", bind=True, curve=cmd_curve
        )
        msg = self.sub.recv(int(self.connect_timeout_s * 1000))
        if msg is None:
            self.close()
            raise TimeoutError(
                f"bridge driver: no RobotState from the external driver on {self.state_endpoint} "
                f"within {self.connect_timeout_s:g} s (dropped: {dict(self.sub.dropped)})"
            )
        self._take(msg)
        super().configure()

    def _take(self, msg: RobotState) -> None:
        s = self._state
        s.q[:], s.dq[:], s.tau[:], s.t = msg.q, msg.dq, msg.tau, msg.sim_time
        self._last_rx = time.monotonic()

    def read_state(self) -> JointState:
        """The newest state the peer sent (unchanged when nothing new arrived)."""
        msg = self.sub.recv_latest()
        if msg is not None:
            self._take(msg)
        return self._state

    @property
    def state_age_s(self) -> float:
        return time.monotonic() - self._last_rx

    def write_command(self, q: np.ndarray, dq: np.ndarray, mode: int) -> None:
        """Forward checked targets to the peer (non-blocking send)."""
        self.tick += 1
        self.pub.send(Command(q=q, dq=dq, mode=MODE_NAMES[mode], tick=self.tick))

    def deactivate(self) -> None:
        """Send damping-only, then close the sockets."""
        if self.configured:
            s = self._state
            self.pub.send(Command(q=s.q, dq=np.zeros(self.n), mode="damp", tick=self.tick + 1))
            self.close()
        super().deactivate()

    def close(self) -> None:
        """Close sockets (and the context when this driver made it)."""
        self.sub.close()
        if hasattr(self, "pub"):
            self.pub.close()
        self.sec.close()  # the ZAP handler, after the sockets and before the context
        if self._own_ctx:
            self._ctx.term()


def _peer_curve(security: BusSecurity | None, endpoint: str, link: str) -> CurveConfig | None:
    if security is not None:
        return security.curve(endpoint, bind=False, link=link)
    if endpoint.startswith("tcp://"):
        raise ValueError(
            f"bridge peer: tcp:// link {endpoint} needs security=BusSecurity(ctx, cfg) (CURVE, "
            "or [security] allow_insecure_tcp = true)"
        )
    return None


class BridgePeer:
    """The external side of the bridge: connects, publishes RobotState, receives Commands."""

    def __init__(
        self,
        ctx: zmq.Context,
        n_joints: int,
        state_endpoint: str,
        command_endpoint: str,
        *,
        security: BusSecurity | None = None,
    ):
        """`security`: `BusSecurity(ctx, cfg)` of the robot config, required on tcp:// links."""
        self.n = n_joints
        state_curve = _peer_curve(security, state_endpoint, "bridge_state")
        cmd_curve = _peer_curve(security, command_endpoint, "bridge_command")
        self.pub = Publisher(ctx, state_endpoint, source="bridge", bind=False, curve=state_curve)
        self.sub = Subscriber(
            ctx,
            command_endpoint,
            (Command,),
            bind=False,
            latest=True,
            shapes={"command": {"q": (n_joints,), "dq": (-1,)}},
            limits=message_limits(Command, {"q": (n_joints,), "dq": (n_joints,)}),
            curve=cmd_curve,
        )

    def publish(self, q: np.ndarray, dq: np.ndarray, tau: np.ndarray, t: float, mode: str):
        """Send one measured state."""
        self.pub.send(RobotState(q=q, dq=dq, tau=tau, sim_time=t, mode=mode))

    def command(self) -> Command | None:
        """The newest command, or None (never blocks)."""
        return self.sub.recv_latest()

    def close(self) -> None:
        """Close both sockets."""
        self.pub.close()
        self.sub.close()
