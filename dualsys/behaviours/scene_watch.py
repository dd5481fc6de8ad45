"""The evaluator's end of the simulation's scene links (`scene_reset`, `scene_truth`).

`SceneWatch.reset` sends a seeded SceneReset; `SceneWatch.truth(episode)` returns the object
positions of the newest SceneTruth once it acknowledges that episode; `SceneWatch.follow`
collects every SceneTruth of the episode in order (the simulation sends 10 a second), so the
scorer follows an object the robot pushes, as the offline evaluator does. The codec drops and
counts a malformed, oversized, wrong-shape or inconsistent SceneTruth (`dropped`, the link
stays up); one that is well formed but lacks an object the scorer needs is counted as
`missing_objects` and ignored.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus import Publisher, SceneReset, SceneTruth, Subscriber
from dualsys.bus.limits import MAX_BYTES, receive_spec
from dualsys.config import RobotConfig


class SceneWatch:
    """Sends SceneReset, reads SceneTruth (connects to both links the robot process binds)."""

    def __init__(
        self, ctx: zmq.Context, cfg: RobotConfig, run_dir: Path, objects: tuple[str, ...]
    ) -> None:
        self.objects = objects
        self.pub = Publisher(ctx, cfg.endpoint("scene_reset", run_dir), "eval", bind=False)
        # ZeroMQ takes frames up to the bus-wide MAX_BYTES here, and the codec refuses (and
        # counts) one over the topic's limits: this socket connects, and libzmq ends a
        # connecting socket's session for good on a frame over its MAXMSGSIZE (a protocol
        # error, no reconnect), which would silence the link for the rest of the evaluation
        self.sub = Subscriber(
            ctx,
            cfg.endpoint("scene_truth", run_dir),
            (SceneTruth,),
            latest=False,
            hwm=1000,
            max_bytes=MAX_BYTES,
            **receive_spec(cfg, "scene_truth"),
        )
        self.missing_objects = 0

    def reset(self, seed: int, episode: int) -> None:
        """Ask the simulation to re-place the objects (seeded) for `episode`."""
        self.pub.send(SceneReset(seed=seed, episode=episode))

    def truth(self, episode: int) -> dict[str, np.ndarray] | None:
        """Object name -> position (3,) from the newest SceneTruth, if it is for `episode` and
        names every object; else None (never raises on what arrives)."""
        msg = self.sub.recv_latest()
        if msg is None or msg.episode != episode:
            return None
        return self._objects(msg)

    def follow(self, episode: int, into: list[tuple[float, dict[str, np.ndarray]]]) -> None:
        """Append (sim_time, object name -> position) of each waiting SceneTruth of `episode`
        to `into`, in order (others are read and skipped; never raises on what arrives)."""
        while (msg := self.sub.recv_nowait()) is not None:
            if msg.episode == episode and (objects := self._objects(msg)) is not None:
                into.append((msg.sim_time, objects))

    def _objects(self, msg: SceneTruth) -> dict[str, np.ndarray] | None:
        """The scorer's objects from one SceneTruth; None (counted) when one is missing."""
        named = msg.named_objects()
        if not all(o in named for o in self.objects):
            self.missing_objects += 1
            return None
        return {o: np.array(named[o], np.float64) for o in self.objects}

    @property
    def dropped(self) -> Counter[str]:
        """SceneTruth messages refused, by reason (the codec's, plus missing_objects)."""
        out = Counter(self.sub.dropped)
        if self.missing_objects:
            out["missing_objects"] = self.missing_objects
        return out

    def close(self) -> None:
        """Close both sockets."""
        self.pub.close()
        self.sub.close()
