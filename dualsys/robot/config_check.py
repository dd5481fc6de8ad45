"""Config checks that need more than the TOML file: the robot's model and the bus's limits.

`config.load` checks what the file alone can tell and stays light (System 2 loads configs and
must not load MuJoCo). `check(cfg)`, run by `dualsys check`, adds what only the wire or the
model knows, each failure a `ConfigError` naming file, key and reason:

- a camera frame (width x height x 3 bytes + header) must fit the camera link's message limit,
  and the camera's offscreen render buffer; camera names and the instruction length must fit
  the bus fields that carry them;
- each joint's min/max must lie inside the model's joint range where the model limits the
  joint; effort inside the model's actuator force range (the URDF's `effort`, which MuJoCo
  reads); velocity under the URDF's `velocity` where it gives one (> 0).

`check_model_limits` needs only the compiled model, so the simulation runs it at start too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from dualsys.bus import codec
from dualsys.bus.messages import CameraFrame, Instruction
from dualsys.config import ConfigError, RobotConfig

#: slack for the parts of a frame's encoding that vary (sequence number, times, length fields)
HEADER_SLACK = 64
#: joint limits equal to the model's (as printed in the URDF) pass despite float rounding
TOL = 1e-6


def frame_bytes(camera: str, width: int, height: int) -> int:
    """Encoded size of one CameraFrame of width x height RGB, header included (upper bound)."""
    tiny = codec.encode(CameraFrame(camera=camera, image=np.zeros((1, 1, 3), np.uint8)), 0, "robot")
    return len(tiny) - 3 + width * height * 3 + HEADER_SLACK


def camera_limit() -> int:
    """The largest message the camera link accepts (bytes).

    The bus's cap on any message (`MAX_BYTES`, defined with the per-topic limits in
    dualsys/bus/limits.py and re-exported by the codec); the camera topic's own limit is
    derived from the configured image size, so the cap is what a frame can outgrow.
    """
    return codec.MAX_BYTES


def check_bus_limits(cfg: RobotConfig) -> None:
    """Camera frames, camera names and instructions must fit what the bus carries."""
    limit = camera_limit()
    name_len = CameraFrame.FIELDS["camera"].max_len
    for i, cam in enumerate(cfg.cameras):
        if len(cam.name) > name_len:
            raise ConfigError(
                cfg.path, f"cameras[{i}].name", f"longer than the bus allows ({name_len} chars)"
            )
        size = frame_bytes(cam.name, cam.width, cam.height)
        if size > limit:
            raise ConfigError(
                cfg.path,
                f"cameras[{i}].width",
                f"a {cam.width}x{cam.height} frame is {size} bytes, over the camera link's "
                f"message limit of {limit} bytes",
            )
    text_len = Instruction.FIELDS["text"].max_len
    if cfg.system2.max_instruction_chars > text_len:
        raise ConfigError(
            cfg.path,
            "system2.max_instruction_chars",
            f"must be <= {text_len}, the longest instruction the bus carries; "
            f"got {cfg.system2.max_instruction_chars}",
        )


def urdf_velocity_limits(path: Path) -> dict[str, float]:
    """Joint name -> `<limit velocity>` of a URDF, for the joints that state one (> 0)."""
    if path.suffix.lower() != ".urdf":
        return {}
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return {}  # the model build reads the same file and reports it
    out = {}
    for joint in root.iter("joint"):
        limit = joint.find("limit")
        try:
            velocity = float(limit.get("velocity", "0")) if limit is not None else 0.0
        except ValueError:
            continue
        if velocity > 0 and joint.get("name"):
            out[joint.get("name")] = velocity
    return out


def check_model_limits(cfg: RobotConfig, model, jmap) -> None:
    """Each config joint's limits must lie inside what the compiled model allows.

    model: the compiled `mujoco.MjModel` of `cfg`; jmap: its `JointMap`. Velocity limits come
    from the robot description (a URDF's `<limit velocity>`; MJCF has none). Raises
    ConfigError at the first joint outside.
    """
    from dualsys.robot.model import description_path

    velocities = urdf_velocity_limits(description_path(cfg.sim.model, cfg.path.parent))
    for joint, jid in zip(cfg.joints, jmap.joint_ids, strict=True):
        key = f"joints.{joint.name}"
        if model.jnt_limited[jid]:
            lo, hi = (float(x) for x in model.jnt_range[jid])
            if joint.min < lo - TOL:
                raise ConfigError(
                    cfg.path, f"{key}.min", f"{joint.min} is below the model's range [{lo}, {hi}]"
                )
            if joint.max > hi + TOL:
                raise ConfigError(
                    cfg.path, f"{key}.max", f"{joint.max} is above the model's range [{lo}, {hi}]"
                )
        if model.jnt_actfrclimited[jid]:
            effort = float(np.max(np.abs(model.jnt_actfrcrange[jid])))
            if effort > 0 and joint.effort > effort + TOL:
                raise ConfigError(
                    cfg.path,
                    f"{key}.effort",
                    f"{joint.effort} is above the model's effort limit {effort}",
                )
        velocity = velocities.get(joint.name)
        if velocity is not None and joint.velocity > velocity + TOL:
            raise ConfigError(
                cfg.path,
                f"{key}.velocity",
                f"{joint.velocity} is above the model's velocity limit {velocity}",
            )


def check_render_buffer(cfg: RobotConfig, model) -> None:
    """Each camera image must fit the model's offscreen buffer, or it cannot be rendered."""
    w, h = model.vis.global_.offwidth, model.vis.global_.offheight
    for i, cam in enumerate(cfg.cameras):
        if cam.width > w or cam.height > h:
            raise ConfigError(
                cfg.path,
                f"cameras[{i}].width",
                f"{cam.width}x{cam.height} is larger than the model's offscreen buffer {w}x{h}",
            )


def check(cfg: RobotConfig) -> None:
    """Every check beyond `config.load` (builds the model, ~1 s). Raises ConfigError."""
    check_bus_limits(cfg)
    from dualsys.robot.model import ModelMismatchError, build_model

    try:
        model, jmap = build_model(cfg)
    except ModelMismatchError as exc:
        raise ConfigError(cfg.path, "joints", str(exc).split("\n", 1)[-1].strip()) from None
    except ConfigError:  # already names its file (the config or its scene file) and key
        raise
    except (FileNotFoundError, ValueError) as exc:
        # model.py names the config's key in its own "file: key: reason" messages
        text = str(exc).removeprefix(f"{cfg.path}: ")
        key, sep, reason = text.partition(": ")
        if not sep or " " in key:
            key, reason = "sim.model", text
        raise ConfigError(cfg.path, key, reason) from None
    check_model_limits(cfg, model, jmap)
    check_render_buffer(cfg, model)
