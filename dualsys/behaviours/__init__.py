"""Learned behaviours: scripted expert, demonstration dataset, training, offline evaluation.

Headless rendering defaults to EGL, set here before any submodule imports mujoco (as
`dualsys.robot` does).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
