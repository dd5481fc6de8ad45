"""The dualsys bus: typed msgpack messages over ZeroMQ. Imports no torch and no mujoco."""

from dualsys.bus.codec import DROP_REASONS, DropError, EncodeError, decode, encode
from dualsys.bus.messages import (
    ActionChunk,
    CameraFrame,
    Command,
    Header,
    Hello,
    Instruction,
    Latent,
    Message,
    RobotState,
    SceneReset,
    SceneTruth,
    Stats,
)
from dualsys.bus.transport import Publisher, Subscriber, age_ms

__all__ = [
    "DROP_REASONS",
    "ActionChunk",
    "CameraFrame",
    "Command",
    "DropError",
    "EncodeError",
    "Header",
    "Hello",
    "Instruction",
    "Latent",
    "Message",
    "Publisher",
    "RobotState",
    "SceneReset",
    "SceneTruth",
    "Stats",
    "Subscriber",
    "age_ms",
    "decode",
    "encode",
]
