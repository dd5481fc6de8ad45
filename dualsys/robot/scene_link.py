"""The simulation's evaluation hooks: SceneReset in, SceneTruth out (links `scene_reset` and
`scene_truth` of `[endpoints]`; the robot process binds both).

An evaluator (`dualsys eval`) re-places the scene's objects with a seeded SceneReset and reads
back where they are, and where the hands are, as SceneTruth: at once after a reset and then
`SCENE_TRUTH_HZ` times a second, so an evaluator follows an object the robot pushes. A driver
without a scene (hardware) ignores resets and publishes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zmq

from dualsys.bus import Publisher, SceneReset, SceneTruth, Subscriber
from dualsys.bus.curve import BusSecurity
from dualsys.bus.limits import receive_spec
from dualsys.config import RobotConfig

#: how often the simulation reports where the objects are (and applies a waiting SceneReset)
SCENE_TRUTH_HZ = 10.0


class SceneLink:
    """The robot process's end of the scene links. `poll(sim_time)` runs in the robot loop
    `SCENE_TRUTH_HZ` times a second, between physics steps (it allocates; the simulation's
    loop, not System 1's 200 Hz path)."""

    def __init__(
        self,
        ctx: zmq.Context,
        cfg: RobotConfig,
        run_dir: Path,
        driver,
        sec: BusSecurity,
        source: str,
    ) -> None:
        reset_ep = cfg.endpoint("scene_reset", run_dir)
        truth_ep = cfg.endpoint("scene_truth", run_dir)
        self.sub = Subscriber(
            ctx,
            reset_ep,
            (SceneReset,),
            bind=True,
            latest=False,
            hwm=16,
            curve=sec.curve(reset_ep, bind=True),
            **receive_spec(cfg, "scene_reset"),
        )
        self.pub = Publisher(
            ctx, truth_ep, source=source, bind=True, hwm=16, curve=sec.curve(truth_ep, bind=True)
        )
        self.driver = driver
        self.episode = -1
        self.enabled = hasattr(driver, "randomise_objects") and hasattr(driver, "site_pos")
        self.objects: tuple[str, ...] = ()
        self.hands: tuple[str, ...] = ()
        if self.enabled:
            from dualsys.scene import scene_of

            scene = scene_of(cfg)
            self.objects = self._sites(scene.object_names)
            self.hands = self._sites(tuple(scene.hand_sites))

    def _sites(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The names the driver's model has a site for (a scene may lack an object)."""
        found = []
        for name in names:
            try:
                self.driver.site_pos(name)
            except KeyError:
                continue
            found.append(name)
        return tuple(found)

    def _positions(self, names: tuple[str, ...]) -> np.ndarray:
        return np.array([self.driver.site_pos(n) for n in names], np.float64).reshape(-1, 3)

    def poll(self, sim_time: float) -> None:
        """Apply the newest SceneReset, if any, and publish the SceneTruth (after the first)."""
        msg = self.sub.recv_latest()
        if not self.enabled:
            return
        if msg is not None:
            self.driver.randomise_objects(np.random.default_rng(msg.seed))
            self.episode = msg.episode
        if self.episode < 0:
            return
        self.pub.send(
            SceneTruth(
                episode=self.episode,
                sim_time=max(0.0, float(sim_time)),
                objects=self._positions(self.objects),
                object_names=",".join(self.objects),
                hands=self._positions(self.hands),
                hand_names=",".join(self.hands),
            )
        )

    @property
    def dropped(self) -> dict[str, int]:
        """SceneReset messages dropped by the codec, by reason."""
        return dict(self.sub.dropped)

    def close(self) -> None:
        """Close both sockets."""
        self.sub.close()
        self.pub.close()
