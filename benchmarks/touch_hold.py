"""Does a touch stay, and what moves it away? Offline closed loop, conditions side by side.

Each condition runs the same scenes and wordings through the offline episode loop
(`dualsys.behaviours.evaluate.run_policy_episode`: System 2 encoder, planner, kernel, MuJoCo;
latent 50 ms late), touching the red cup:

- rest: from rest (as the live eval);
- hold: started still with the fingertip on the expert's touch point;
- hold+latent: as hold, System 2's latent fixed at the first frame's;
- hold+image / hold+state: as hold, System 2 sees the first frame's image / state, the other
  input live;
- hold+nocontact: as hold, the objects float and collide with nothing;
- expert: the scripted expert's demonstration of the same scene, from rest.

Per condition: episodes whose fingertip or palm stays within the scorer's touch radius for
the whole last 3 s, the share of the last 3 s inside it, the mean distance, and where the
fingertip rests relative to the object's top centre. Results: benchmarks/results/behaviours.md
("The touch that leaves and the wave that stays still").

.venv/bin/python benchmarks/touch_hold.py --seeds 1001-1008 [--ckpt DIR] [--conditions ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import dualsys.robot  # noqa: F401  (MUJOCO_GL before mujoco is imported)

CONDITIONS = (
    "rest", "hold", "hold+latent", "hold+image", "hold+state", "hold+nocontact", "expert",
)  # fmt: skip
WORDINGS = (
    "please touch the red mug", "go put your fingertips on the red mug",
    "could you touch that red cup", "reach over and touch that red mug",
    "lay your hand on the red cup", "touch the mug that is red",
)  # fmt: skip
BEHAVIOUR, OBJECT = "touch_red_cup", "cup"
LATE_S = 3.0


class FirstInputs:
    """A brain whose System 2 keeps the first frame's image and/or state (or latent)."""

    def __init__(self, brain, image: bool = False, state: bool = False, latent: bool = False):
        self.brain, self.sampler = brain, brain.sampler
        self.keep = {"image": image, "state": state, "latent": latent}
        self.first: dict = {}

    def latent(self, image, q, dq, text):
        if not self.first:
            self.first = {"image": image.copy(), "q": q.copy(), "dq": dq.copy()}
        if self.keep["latent"] and "latent" in self.first:
            return self.first["latent"]
        f = self.first
        img = f["image"] if self.keep["image"] else image
        q, dq = (f["q"], f["dq"]) if self.keep["state"] else (q, dq)
        v = self.brain.latent(img, q, dq, text)
        self.first.setdefault("latent", v)
        return v


def floating_objects(sim, on: bool, saved: dict) -> None:
    """Objects without gravity and collisions (on) or as built (off)."""
    m = sim.model
    if not saved:
        saved.update(
            ct=m.geom_contype.copy(), ca=m.geom_conaffinity.copy(), g=m.body_gravcomp.copy()
        )
    m.geom_contype[:] = saved["ct"]
    m.geom_conaffinity[:] = saved["ca"]
    m.body_gravcomp[:] = saved["g"]
    if on:
        for name in sim.scene.object_names:
            body = m.body(name).id
            m.body_gravcomp[body] = 1.0
            geoms = m.geom_bodyid == body
            m.geom_contype[geoms] = 0
            m.geom_conaffinity[geoms] = 0


def touch_pose(expert, setup) -> np.ndarray:
    """The expert's touch pose for the setup's scene (fingertip on its touch point)."""
    from dualsys.tasks.gr1_table.expert import APPROACH_ABOVE, WAIST

    pos = setup.objects[OBJECT]
    side = "right" if pos[1] < 0 else "left"
    target = expert.touch_target(OBJECT, pos)
    above = target + [0.0, 0.0, APPROACH_ABOVE]
    q_pre, _ = expert.kin.ik(side, above, expert.default, extra=WAIST, point="tip")
    return expert.kin.ik(side, target, q_pre, extra=WAIST, point="tip")[0]


def metrics(t, hands, top) -> dict:
    """Touch-hold numbers of one episode (hands (T, 4, 3): palms then fingertips)."""
    from dualsys.tasks.gr1_table.scoring import TOUCH_RADIUS

    d = np.linalg.norm(hands - top[:, None], axis=2).min(axis=1)
    late = t >= t[-1] - LATE_S
    tip = hands[:, 3 if top[0, 1] < 0 else 2]
    return {
        "whole": bool(d[late].max() <= TOUCH_RADIUS),
        "share": float((d[late] <= TOUCH_RADIUS).mean()),
        "mean_cm": float(d[late].mean() * 100),
        "tip_cm": (tip[late] - top[late]).mean(axis=0) * 100,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="benchmarks/touch_hold.py")
    p.add_argument("--seeds", default="1001-1008", help="scene seeds, FIRST-LAST")
    p.add_argument("--ckpt", default="", help="checkpoint dir (default: the shipped weights)")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--latent-delay-ms", type=float, default=50.0)
    p.add_argument("--live-timing", action="store_true",
                   help="System 2 on its own clock as live (evaluate.LiveTiming)")  # fmt: skip
    a = p.parse_args()
    from dualsys import config
    from dualsys.behaviours.evaluate import LiveTiming, OfflineBrain, run_policy_episode
    from dualsys.behaviours.rollout import new_setup, run_expert
    from dualsys.robot.simulation import Simulation
    from dualsys.tasks import task_pack

    lo, _, hi = a.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    cfg = config.load_robot("gr1")
    pack = task_pack(cfg)
    sim = Simulation(cfg)
    sim.configure()
    sim.activate()
    expert = pack.expert(pack.kinematics(sim.model, sim.jmap.qpos_adr))
    ck = Path(a.ckpt) if a.ckpt else None
    brain = OfflineBrain(
        cfg, ck / "policy.safetensors" if ck else None, ck / "fusion.safetensors" if ck else None
    )
    half = sim.scene.object(OBJECT).half_height
    saved: dict = {}
    t0 = time.monotonic()
    print("| condition | whole last 3 s within 5 cm | share of the last 3 s | mean distance | "
          "fingertip - top centre (x, y, z cm) |\n|---|---|---|---|---|")  # fmt: skip
    for cond in a.conditions.split(","):
        rows = []
        for i, seed in enumerate(seeds):
            text = WORDINGS[i % len(WORDINGS)]
            floating_objects(sim, cond == "hold+nocontact", saved)
            setup = new_setup(sim, expert, BEHAVIOUR, text, seed)
            setup.q_start = touch_pose(expert, setup) if cond.startswith("hold") else expert.default
            if cond == "expert":
                _, hands, objs = run_expert(sim, expert, cfg, setup, pack.eval_episode_s)
                t = np.arange(len(hands)) / cfg.rates.action_hz
                top = objs[:, sim.scene.object_names.index(OBJECT)] + [0.0, 0.0, half]
            else:
                keep = cond.partition("+")[2]
                fixed = keep in ("image", "state", "latent")
                b = FirstInputs(brain, **{keep: True}) if fixed else brain
                live = LiveTiming() if a.live_timing else None
                tr = run_policy_episode(sim, b, cfg, setup, text, live_timing=live,
                                        latent_delay_ns=int(a.latent_delay_ms * 1e6))  # fmt: skip
                t, hands, top = tr.t, tr.hands, tr.objects[OBJECT] + [0.0, 0.0, half]
            rows.append(metrics(t, hands, top))
        tip = np.mean([r["tip_cm"] for r in rows], axis=0)
        print(f"| {cond} | {sum(r['whole'] for r in rows)}/{len(rows)} | "
              f"{100 * np.mean([r['share'] for r in rows]):.0f}% | "
              f"{np.mean([r['mean_cm'] for r in rows]):.1f} cm | "
              f"{tip[0]:.1f}, {tip[1]:.1f}, {tip[2]:.1f} |", flush=True)  # fmt: skip
    floating_objects(sim, False, saved)
    print(f"\n{len(seeds)} scenes per condition, {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
