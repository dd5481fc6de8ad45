"""The robot side: the robot interface and driver registry, the MuJoCo simulation of the
embodiment, robot-side safety, and the robot process.

Headless rendering defaults to EGL (set before anything imports mujoco); set MUJOCO_GL=glfw
for the `--view` window or osmesa where no EGL exists.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
