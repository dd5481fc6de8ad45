"""Episodes in the offline simulation (stepped as fast as the CPU allows, no wall clock).

`new_setup` draws an episode: random object placement and a start pose (the default pose,
slightly perturbed, or a pose taken from the middle of another behaviour, so the data also
shows switching). return_to_rest also starts near the default pose 40% of the time, so the
data shows "already at rest: stay still" as well as the way back. With `moving` > 0 that share
of episodes starts in motion instead: another behaviour's expert runs (unrecorded) for
0.6-3 s from near the default pose, then the episode's behaviour is planned from wherever the
robot is, as when an instruction changes mid-motion on the live robot. With `own` > 0 that
share of episodes starts still near the behaviour's own goal instead: a pose of its own plan
after the first move (a touch on its way down or holding, a wave anywhere on its swing), the
arms jittered by `OWN_JITTER`. The trained policy drifts into such states by itself (a touch
held a few cm off the object, a wave's hand standing still on the swing) and the other starts
never show the way back from them (benchmarks/results/behaviours.md, "The touch that
leaves and the wave that stays still").

`run_expert` executes the expert's plan with 200 Hz PD commands and emits every sample as a
wire frame of dualsys's own bus (`Instruction`, `RobotState`, `Command`,
`CameraFrame`, encoded by `dualsys.bus.codec` with the simulation time as the header's
monotonic time); the dataset writer only ever sees those frames, decoded and validated by the
same codec the live processes use. Palm and object positions (ground truth, for scoring)
travel beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dualsys.bus import CameraFrame, Command, Instruction, RobotState, encode
from dualsys.config import RobotConfig

EPISODE_S = 4.0
SOURCE = "demo"
#: std (rad) of the arm-joint jitter of a start near the behaviour's own goal (`new_setup`)
OWN_JITTER = 0.05


@dataclass
class Setup:
    """One episode's initial conditions."""

    behaviour: str
    instruction: str
    q_start: np.ndarray
    objects: dict[str, np.ndarray]
    seed: int
    lead: tuple[str, float] | None = None  # (behaviour, seconds) run before the episode


def new_setup(
    sim,
    expert,
    behaviour: str,
    instruction: str,
    seed: int,
    moving: float = 0.0,
    own: float = 0.0,
) -> Setup:
    """Random objects and start pose for one episode (deterministic in `seed`); with
    probability `moving` a lead-in behaviour instead of a still start, with probability `own`
    a still start near the behaviour's own goal (module docstring). Draws nothing extra when
    both are 0, so the datasets made before `own` existed are reproduced exactly."""
    rng = np.random.default_rng(seed)
    sim.reset()
    objects = sim.randomise_objects(rng)
    d = expert.default
    others = [b for b in expert.behaviours if b not in (behaviour, expert.rest_behaviour)]
    lead = None
    if moving > 0 and rng.random() < moving:
        lead = (others[rng.integers(len(others))], float(rng.uniform(0.6, 3.0)))
    if own > 0 and lead is None and rng.random() < own:
        plan = expert.plan(behaviour, d, objects)
        q = plan(rng.uniform(plan.segments[0].t1, plan.t_end))
        q = q + rng.normal(0.0, OWN_JITTER, d.shape) * expert.start_jitter
    elif lead is not None or rng.random() < 0.4:  # near the default pose (moving: lead from it)
        q = d + rng.normal(0.0, 0.03, d.shape) * expert.start_jitter
    else:
        other = others[rng.integers(len(others))]
        plan = expert.plan(other, d, objects)
        q = plan(rng.uniform(0.6, plan.t_end + 1.0))
    q = np.clip(q, expert.limits["min"], expert.limits["max"])
    return Setup(behaviour, instruction, q, objects, seed, lead)


def apply_setup(sim, setup: Setup) -> None:
    """Put the simulation in the setup's state (robot at q_start, at rest; objects placed)."""
    sim.reset(setup.q_start)
    for name in sim.scene.object_names:
        pos = setup.objects[name]
        sim.set_object_pose(name, pos)
    sim.forward()


def ground_truth(sim) -> tuple[np.ndarray, np.ndarray]:
    """(4, 3) palm (left, right) and fingertip (left, right) positions (the scene file's hand
    sites and tip bodies), and (n_objects, 3) object positions now."""
    sites = sim.scene.hand_sites
    palms = [sim.site_pos(n) for n in sites]
    hands = np.stack(palms + [sim.body_pos(h.tip) for h in sites.values()])
    objs = np.stack([sim.site_pos(n) for n in sim.scene.object_names])
    return hands, objs


def run_expert(sim, expert, cfg: RobotConfig, setup: Setup, seconds: float = EPISODE_S):
    """Execute the expert in the simulation; return (wire frames, hands (T,4,3), objs (T,k,3)).

    Frames, in time order: one Instruction, then per action step a RobotState and the
    Command due at that step (the action label), and a CameraFrame at the camera rate.
    """
    apply_setup(sim, setup)
    r = cfg.rates
    dt = 1.0 / r.control_hz
    q0 = setup.q_start
    if setup.lead is not None:
        lead, lead_s = setup.lead
        before = expert.plan(lead, setup.q_start, setup.objects)
        for j in range(round(lead_s * r.control_hz)):
            sim.write_command(before(j * dt), before.velocity(j * dt), 0)
            sim.advance(dt)
        q0 = np.clip(sim.read_state().q, expert.limits["min"], expert.limits["max"])
    plan = expert.plan(setup.behaviour, q0, setup.objects)
    ticks = r.control_hz // r.action_hz
    frame_every = max(1, r.action_hz // r.camera_hz)
    cam = cfg.cameras[0].name
    frames: list[bytes] = [encode(Instruction(text=setup.instruction, id=1), 0, SOURCE, 0)]
    hands, objs = [], []
    seq = 1
    for k in range(round(seconds * r.action_hz)):
        t = k / r.action_hz
        s = sim.read_state()
        ns = round(t * 1e9)
        frames.append(encode(RobotState(s.q.copy(), s.dq.copy(), s.tau.copy(), t), seq, SOURCE, ns))
        q_cmd, dq_cmd = plan(t), plan.velocity(t)
        frames.append(encode(Command(q_cmd, dq_cmd, "run", k), seq, SOURCE, ns))
        if k % frame_every == 0:
            frames.append(encode(CameraFrame(cam, sim.render(cam), t), seq, SOURCE, ns))
        h, o = ground_truth(sim)
        hands.append(h)
        objs.append(o)
        seq += 1
        for j in range(ticks):
            tj = t + j * dt
            sim.write_command(plan(tj), plan.velocity(tj), 0)
            sim.advance(dt)
    return frames, np.array(hands), np.array(objs)
