"""The 200 Hz control loop, through its real sockets, keeps commanding when a peer sends a
well-formed chunk or latent whose integers overflow its int64 kernel state."""

from __future__ import annotations

import time

import numpy as np
import zmq

from dualsys import config
from dualsys.bus.codec import encode
from dualsys.bus.messages import ActionChunk, Latent, RobotState
from dualsys.bus.transport import Publisher
from dualsys.system1.control import ControlLoop

CFG = config.load_robot("gr1")
LIM = CFG.limits()
N, H, NC = CFG.n_joints, CFG.policy.chunk_horizon, len(CFG.controlled_indices)
P = CFG.rates.control_period_ns


def test_overflowing_chunk_and_latent_are_dropped_not_raised(tmp_path) -> None:
    ctx = zmq.Context()
    pubs = {
        t: Publisher(ctx, CFG.endpoint(t, tmp_path), "peer") for t in ("state", "chunk", "latent")
    }
    loop = ControlLoop(CFG, ctx, tmp_path)
    try:
        loop.configure()
        time.sleep(0.3)
        t = time.monotonic_ns()
        loop.activate(t)
        q0 = LIM["default"]
        pubs["state"].send(RobotState(q=q0, dq=q0 * 0, tau=q0 * 0))
        time.sleep(0.05)
        loop.update(t)
        acts = np.tile(q0[CFG.controlled_indices], (H, 1)).astype(np.float32)
        hostile = [
            ("chunk", encode(ActionChunk(actions=acts, t0_mono_ns=2**64 - 1, dt_ns=1), 1, "p")),
            ("chunk", encode(ActionChunk(actions=acts, t0_mono_ns=t, dt_ns=0), 2, "p")),
            ("latent", encode(Latent(vector=np.zeros(CFG.system2.latent_dim)), 2**64 - 1, "s")),
        ]
        for i, (topic, data) in enumerate(hostile):
            pubs[topic].send_raw(data)
            time.sleep(0.02)
            loop.update(t + (i + 1) * P)  # before: OverflowError / ZeroDivisionError here
            assert np.isfinite(loop.k.q).all()
        assert loop.chunk_sub.dropped["out_of_range"] == 2
        assert loop.latent_sub.dropped["out_of_range"] == 1
        assert loop.chunks == 0 and loop.latent_t_ns == -1
    finally:
        for p in pubs.values():
            p.close()
        loop.close()
        ctx.term()
