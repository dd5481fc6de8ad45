"""The policy's planning step: whether a chunk is due, how it is planned, and sampling it.

One implementation, two drivers: the policy process (`policy_proc.PolicyLoop`: wall clock,
inputs from the bus, chunks published) and the offline evaluator
(`dualsys.behaviours.evaluate`: simulated time, chunks handed straight to the kernel). Both
call `Planner.step` with the time, the expected inference delay, the newest latent (and the
instruction it was made for) and the robot state; it returns the new chunk, or None when
none is due.

A chunk is due when there is none, when the unexecuted part of the current one fell below
`policy.replan_below`, or at once when the latent belongs to a new instruction (the robot
follows a new command sooner). It is planned with real-time chunking (`chunks.plan_next`),
in settling mode for `policy.switch_settle_ms` after a new instruction (`chunks.Settling`),
or, with `rtc=False`, back to back without overlap (`chunks.back_to_back`, the baseline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dualsys.config import RobotConfig
from dualsys.system1.chunks import (
    Chunk,
    Plan,
    Settling,
    back_to_back,
    needs_replan,
    plan_next,
)


@dataclass
class Planned:
    """One planning step's outcome: the plan, the sampled chunk, the sampling latency.

    chunk is None when the sampler returned non-finite actions: nothing may be sent, and
    the planner keeps its current chunk.
    """

    plan: Plan
    chunk: Chunk | None
    latency_ns: int


class Planner:
    """The current chunk, the instruction it serves and the settling state of one policy."""

    def __init__(
        self,
        sampler,
        ctrl: np.ndarray,
        dt_ns: int,
        replan_below: int,
        settle_ns: int,
        rtc: bool = True,
    ) -> None:
        self.sampler, self.ctrl, self.dt_ns = sampler, ctrl, dt_ns
        self.replan_below, self.rtc = replan_below, rtc
        self.settling = Settling(settle_ns)
        self.current: Chunk | None = None
        #: instruction id of the latent the current chunk was sampled with
        self.instruction: object = None
        self.chunks = 0  # chunks adopted (their ids count up from 1)

    @classmethod
    def for_robot(cls, cfg: RobotConfig, sampler, rtc: bool = True) -> Planner:
        """A planner with the robot config's action rate, replan threshold and settle time."""
        p = cfg.policy
        return cls(
            sampler,
            cfg.controlled_indices,
            1_000_000_000 // cfg.rates.action_hz,
            p.replan_below,
            int(p.switch_settle_ms * 1e6),
            rtc,
        )

    def due(self, now_ns: int, instruction: object) -> bool:
        """True when a chunk is due at now_ns for a latent made for `instruction`."""
        return instruction != self.instruction or needs_replan(
            self.current, now_ns, self.replan_below
        )

    def step(
        self,
        now_ns: int,
        delay_ns: int,
        latent: np.ndarray,
        instruction: object,
        q: np.ndarray,
        dq: np.ndarray,
    ) -> Planned | None:
        """Plan and sample the chunk due at now_ns (None when none is due).

        delay_ns: the expected time from now until the chunk reaches the control loop (the
        actions due before then are frozen); instruction: the id of the instruction the
        latent was made for (compared for equality only); q, dq: all joints.
        """
        if not self.due(now_ns, instruction):
            return None
        new_task = instruction != self.instruction
        if self.rtc:
            settling = self.settling.at(now_ns, new_task)
            plan = plan_next(
                self.current, now_ns, delay_ns, self.dt_ns, hold=q[self.ctrl], settling=settling
            )
        else:
            plan = back_to_back(now_ns, delay_ns)
        t0 = time.monotonic_ns()
        actions = self.sampler.sample(
            latent, q, dq, plan.prefix if plan.frozen else None, plan.weights
        )
        latency = time.monotonic_ns() - t0
        if not np.isfinite(actions).all():
            return Planned(plan, None, latency)
        self.chunks += 1
        self.current = Chunk(actions, plan.t0_ns, self.dt_ns, self.chunks)
        self.instruction = instruction
        return Planned(plan, self.current, latency)
