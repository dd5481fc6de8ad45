"""The System 2 server link: what a remote System 2 sends a robot, and the receive limits.

A robot's link process (dualsys/system2/link.py) sends the server the robot's own
`RobotState`, `CameraFrame`, `Instruction` and `Hello` messages over one ZeroMQ DEALER, each
stamped with the link's send time (robot clock, t1). The server (dualsys/system2/server.py)
answers with `RemoteLatent`: the latent plus what the link needs to relate the two clocks
(dualsys/bus/clock.py): the t1 of the newest input the server held and its receive time t2,
and the send time t3 (server clock). Server-clock fields are signed: only differences of them
mean anything. Imports only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from dualsys.bus.limits import Limits, message_limits
from dualsys.bus.messages import (
    INT64_MAX,
    INT64_MIN,
    CameraFrame,
    Field,
    Header,
    Hello,
    Instruction,
    Message,
    RobotState,
)

_NS = {"lo": 0, "hi": INT64_MAX}
_SIGNED = {"lo": INT64_MIN, "hi": INT64_MAX}


@dataclass
class RemoteLatent(Message):
    """A latent from a remote System 2 server, with the clock-exchange times.

    frame_t1_ns / state_t1_ns: the link's send times (robot clock) of the frame and state it
    was computed from. echo_t1_ns: the link's send time of the newest input the server held
    when it sent this; echo_t2_ns: when that input arrived (server clock); t3_ns: when this
    left (server clock).
    """

    TYPE: ClassVar[str] = "remote_latent"
    FIELDS: ClassVar[dict[str, Field]] = {
        "vector": Field("array", "f", 1),
        "instruction_id": Field("int", **_NS),
        "instruction": Field("str", max_len=4096),
        "step": Field("int", **_NS),
        "frame_t1_ns": Field("int", **_NS),
        "state_t1_ns": Field("int", **_NS),
        "echo_t1_ns": Field("int", **_NS),
        "echo_t2_ns": Field("int", **_SIGNED),
        "t3_ns": Field("int", **_SIGNED),
    }
    vector: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    instruction_id: int = 0
    instruction: str = ""
    step: int = 0
    frame_t1_ns: int = 0
    state_t1_ns: int = 0
    echo_t1_ns: int = 0
    echo_t2_ns: int = 0
    t3_ns: int = 0
    header: Header | None = None

    def invalid(self) -> str:
        """The server cannot have sent the latent before the input it echoes arrived."""
        if self.t3_ns < self.echo_t2_ns:
            return f"t3 {self.t3_ns} before t2 {self.echo_t2_ns}"
        return ""


#: what a server accepts from a robot's link
LINK_INPUTS = (Hello, RobotState, CameraFrame, Instruction)


def widest(*limits: Limits) -> Limits:
    """Limits admitting every message that any of `limits` admits."""
    return Limits(
        max_bytes=max(x.max_bytes for x in limits),
        max_str_len=max(x.max_str_len for x in limits),
        max_map_len=max(x.max_map_len for x in limits),
        max_ext_len=max(x.max_ext_len for x in limits),
    )


def remote_latent_limits(latent_dim: int, max_instruction_chars: int) -> Limits:
    """What a link accepts from a server: a RemoteLatent of this size, or a Hello."""
    return widest(
        message_limits(
            RemoteLatent, {"vector": (latent_dim,)}, {"instruction": max_instruction_chars}
        ),
        message_limits(Hello),
    )


__all__ = ["LINK_INPUTS", "RemoteLatent", "remote_latent_limits", "widest"]
