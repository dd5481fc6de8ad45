"""Headless camera rendering: a cheap renderer per model, and a thread that publishes frames.

Rendering is software OpenGL here (EGL + llvmpipe), so it is kept cheap: simplified meshes
(see meshes.py), no shadows, reflections or skybox. `FrameThread` renders in its own thread
(MuJoCo releases the GIL while rendering) from qpos snapshots the physics loop hands over, so
the physics loop never waits for a frame.
"""

from __future__ import annotations

import os
import threading
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dualsys.config import Camera  # noqa: E402
from dualsys.timing import Histogram  # noqa: E402


class CameraRenderer:
    """Renders the named model cameras to H x W x 3 uint8 arrays (one GL context, one thread).

    light=True switches off shadows, reflections and skybox (the chosen setting); False renders
    with MuJoCo's defaults (the "full" baseline of the benchmark).
    """

    def __init__(self, model: mujoco.MjModel, cameras: tuple[Camera, ...], light: bool = True):
        self.model = model
        self.cameras = {c.name: c for c in cameras}
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        for c in cameras:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c.name) < 0:
                raise ValueError(f"camera {c.name!r} is not in the model")
            key = (c.height, c.width)
            if key not in self._renderers:
                self._renderers[key] = mujoco.Renderer(model, c.height, c.width)
        self.option = mujoco.MjvOption()
        self.light = light

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        """Render one camera from `data` (kinematics must be current)."""
        c = self.cameras[camera]
        r = self._renderers[(c.height, c.width)]
        r.update_scene(data, camera=camera, scene_option=self.option)
        if self.light:
            flags = r.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        return r.render()

    def close(self) -> None:
        """Free the GL contexts."""
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


class FrameThread(threading.Thread):
    """Renders and publishes camera frames from qpos snapshots, in its own thread.

    `submit` (physics loop thread) copies qpos into a slot and returns at once; a snapshot not
    yet rendered is replaced by the newer one (counted in `skipped`). `publish(name, image,
    sim_time)` is called in this thread, so it may own its ZeroMQ socket.
    """

    def __init__(self, model: mujoco.MjModel, cameras: tuple[Camera, ...], publish, light=True):
        super().__init__(name="dualsys-frames", daemon=True)
        self.model, self.cameras, self.publish, self.light = model, cameras, publish, light
        self._cv = threading.Condition()
        self._slot: tuple[np.ndarray, float] | None = None
        self._stopping = False
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.render_us = Histogram()
        self.frames = 0
        self.skipped = 0

    def submit(self, qpos: np.ndarray, sim_time: float) -> None:
        """Hand over a snapshot (loop thread; one small copy, no waiting)."""
        snap = (qpos.copy(), sim_time)
        with self._cv:
            if self._slot is not None:
                self.skipped += 1
            self._slot = snap
            self._cv.notify()

    def stop(self) -> None:
        """Ask the thread to finish; join it afterwards."""
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def run(self) -> None:
        try:
            renderer = CameraRenderer(self.model, self.cameras, self.light)
            data = mujoco.MjData(self.model)
            mujoco.mj_forward(self.model, data)
            for cam in self.cameras:  # warm-up: the first frame compiles shaders (~0.4 s)
                renderer.render(data, cam.name)
        except BaseException as exc:  # reported by the owner, which keeps the physics running
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            while True:
                with self._cv:
                    while self._slot is None and not self._stopping:
                        self._cv.wait(0.5)
                    if self._stopping:
                        return
                    qpos, sim_time = self._slot
                    self._slot = None
                data.qpos[:] = qpos
                mujoco.mj_kinematics(self.model, data)
                mujoco.mj_camlight(self.model, data)
                for cam in self.cameras:
                    t0 = time.perf_counter_ns()
                    image = renderer.render(data, cam.name)
                    self.render_us.record((time.perf_counter_ns() - t0) // 1000)
                    self.publish(cam.name, image, sim_time)
                    self.frames += 1
        except BaseException as exc:
            self.error = exc
        finally:
            renderer.close()
