"""The policy process: samples action chunks with real-time chunking and publishes them.

It subscribes robot state and the System 2 latent (latest value), and knows which chunk the
control process executes (the newest one it sent: the control process switches on the next
tick) and the time, so it needs no back channel. When the unexecuted part of that chunk falls
below `policy.replan_below`, it plans the next chunk on the same time grid, freezes the actions
that will run before the new chunk can arrive (from its own measured inference delay) and
inpaints the rest. Normal scheduling on System 1's core: the FIFO control loop preempts it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus.curve import BusSecurity
from dualsys.bus.latent_link import LatentIn
from dualsys.bus.limits import receive_spec
from dualsys.bus.messages import ActionChunk, Hello, Latent, RobotState, Stats
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.config import RobotConfig
from dualsys.rundir import write_summary
from dualsys.system1.chunks import DelayEstimator
from dualsys.system1.control_proc import StopFlag
from dualsys.system1.monitor import Percentiles
from dualsys.system1.planner import Planner
from dualsys.timing import Histogram, pin_to_core, warn_once

ROLE = "policy"


class PolicyLoop:
    """State of the policy process. `step` plans and publishes at most one chunk."""

    def __init__(self, cfg: RobotConfig, ctx: zmq.Context, run_dir: Path, sampler, info: dict):
        self.cfg, self.sampler, self.info = cfg, sampler, info
        ep = cfg.endpoint
        n = cfg.n_joints
        self.sec = sec = BusSecurity(ctx, cfg)  # CURVE on tcp:// links when configured
        eps = {name: ep(name, run_dir) for name in ("state", "latent", "chunk", "stats")}

        def sub(name: str, cls: type) -> Subscriber:
            curve = sec.curve(eps[name], bind=False)  # shapes and size limits of this robot
            return Subscriber(ctx, eps[name], (cls,), curve=curve, **receive_spec(cfg, name))

        self.state_sub = sub("state", RobotState)
        self.latent_sub = sub("latent", Latent)
        # the latent: from the same-machine shm slot once System 2 writes it, else ZeroMQ
        self.latent_in = LatentIn(ctx, cfg, self.latent_sub, run_dir)
        self.chunk_pub = Publisher(
            ctx, eps["chunk"], ROLE, bind=True, curve=sec.curve(eps["chunk"], bind=True)
        )
        self.stats_pub = Publisher(
            ctx, eps["stats"], ROLE, bind=False, curve=sec.curve(eps["stats"], bind=False)
        )
        self.planner = Planner.for_robot(cfg, sampler)
        self.delay = DelayEstimator(initial_ns=2 * self.planner.dt_ns)
        self.latency_us = Histogram()
        self.p_latency = Percentiles(self.latency_us)
        self.state: RobotState | None = None
        self.latent = self.latent_in.view  # the newest latent taken (count 0: none yet)
        self.stale_ns = int(cfg.budgets.latent_stale_ms * 1e6)
        self.hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, n, os.getpid())
        self.nonfinite_chunks = 0
        self._bad_inputs: tuple[int, int] | None = None

    def _inputs_key(self) -> tuple[int, int]:
        """Identity of the current inputs: (id of the state object, latents taken)."""
        return (id(self.state), self.latent.count)

    def poll_inputs(self, timeout_ms: int) -> None:
        """Take the newest state and latent; wait up to timeout_ms when nothing is new."""
        st = self.state_sub.recv_latest()
        new_latent = self.latent_in.take()
        if st is None and not new_latent and timeout_ms > 0:
            st = self.state_sub.recv(timeout_ms)
        if st is not None:
            self.state = st

    def step(self) -> bool:
        """Publish a new chunk if one is due and inputs exist. Returns True if it published.

        Whether a chunk is due and how it is planned is `planner.Planner.step` (shared with
        the offline evaluator): a latent for a new instruction makes one due at once, and
        chunks are planned in settling mode for `policy.switch_settle_ms` after it.
        """
        now = time.monotonic_ns()
        if self.state is None or not self.latent.count or self._inputs_key() == self._bad_inputs:
            return False
        st, la = self.state, self.latent
        out = self.planner.step(
            now, self.delay.estimate_ns, la.array, la.int("instruction_id"), st.q, st.dq
        )
        if out is None:
            return False
        if out.chunk is None:
            # extreme (finite) inputs can overflow the network: publish nothing, and sample
            # again only once a new state or latent arrives
            self.nonfinite_chunks += 1
            self._bad_inputs = self._inputs_key()
            warn_once("policy: sampled non-finite actions (inputs out of range?); not sent")
            return False
        chunk = out.chunk
        self.chunk_pub.send(
            ActionChunk(
                actions=chunk.actions,
                t0_mono_ns=chunk.t0_ns,
                dt_ns=chunk.dt_ns,
                chunk_id=chunk.chunk_id,
                latent_seq=la.seq,
                frozen=out.plan.frozen,
                latency_ns=out.latency_ns,
            ),
            t_mono_ns=time.monotonic_ns(),
        )
        self.delay.add(time.monotonic_ns() - now)
        self.latency_us.record(out.latency_ns // 1000)
        return True

    @property
    def chunks(self) -> int:
        """Chunks published so far."""
        return self.planner.chunks

    def send_stats(self) -> None:
        """Publish the policy's Stats."""
        p50, p99 = self.p_latency.many((50.0, 99.0))
        values = {
            "chunks": float(self.chunks),
            "latency_p50_ms": p50 / 1000,
            "latency_p99_ms": p99 / 1000,
            "delay_estimate_ms": self.delay.estimate_ns / 1e6,
        }
        self.stats_pub.send(Stats(process=ROLE, values=values))

    def summary(self) -> dict:
        """The run summary written to {run_dir}/policy.json."""
        s = self.latency_us.summary(1000.0)
        return {
            "chunks": self.chunks,
            "latency_ms": {"p50": s["p50"], "p99": s["p99"], "max": s["max"]},
            "delay_estimate_ms": self.delay.estimate_ns / 1e6,
            "nonfinite_chunks": self.nonfinite_chunks,
            "precision": self.info["precision"],
            "params": self.info["params"],
            "weights": self.info["weights"],
            "dropped": {
                "state": dict(self.state_sub.dropped),
                "latent": dict(self.latent_sub.dropped),
                "latent_slot": dict(self.latent_in.slot.dropped) if self.latent_in.slot else {},
            },
            "latent_link": self.latent_in.via,  # latents taken from the shm slot / ZeroMQ
        }

    def close(self) -> None:
        """Close every socket and stop the CURVE authenticator (before the context ends)."""
        self.latent_in.close()
        for s in (self.state_sub, self.latent_sub, self.chunk_pub, self.stats_pub):
            s.close()
        self.sec.close()


def run_policy(cfg: RobotConfig, run_dir: Path, duration_s: float, untrained: bool) -> int:
    """Run the policy process; returns the exit code."""
    from dualsys.system1 import policy

    stop = StopFlag()
    stop.install()
    note = pin_to_core(cfg.cores.system1)
    if note:
        warn_once(note)
    try:
        sampler, info = policy.build(cfg, untrained=untrained)
    except policy.PolicyError as exc:
        print(f"dualsys policy: error: {exc}", file=sys.stderr)
        return 2
    ctx = zmq.Context()
    loop = PolicyLoop(cfg, ctx, Path(run_dir), sampler, info)
    # warm-up: a few samples so the first real chunk is not a cold-cache outlier
    z = np.zeros(cfg.n_joints)
    for _ in range(3):
        sampler.sample(np.zeros(cfg.system2.latent_dim, np.float32), z, z)
    stats_period = int(1e9 / cfg.rates.stats_hz)
    next_stats = next_hello = time.monotonic_ns()
    end = time.monotonic_ns() + int(duration_s * 1e9) if duration_s > 0 else 1 << 62
    while not stop.set and time.monotonic_ns() < end:
        loop.poll_inputs(timeout_ms=2)
        if not loop.step():
            time.sleep(0.002)
        now = time.monotonic_ns()
        if now >= next_hello:
            loop.stats_pub.send(loop.hello)
            next_hello = now + 1_000_000_000
        if now >= next_stats:
            loop.send_stats()
            next_stats = now + stats_period
    summary = loop.summary()
    path = write_summary(run_dir, ROLE, summary)
    loop.close()
    ctx.term()
    print(
        f"dualsys policy: {summary['chunks']} chunks, "
        f"latency p50 {summary['latency_ms']['p50']:.1f} ms "
        f"p99 {summary['latency_ms']['p99']:.1f} ms ({info['precision']}); summary in {path}",
        file=sys.stderr,
    )
    return 0
