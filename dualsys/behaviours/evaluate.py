"""Offline closed-loop evaluation: System 2 encoder + System 1 policy + interp kernel + sim.

Everything runs in one process on simulated time (no sockets, no wall clock), but with the
live system's rates and components: every 1/camera_hz s the camera is rendered and the
builtin System 2 encoder (MiniLM, MobileNetV2, trained fusion head) makes a latent; the
policy (`ChunkSampler`, the inference precision of the robot config) samples a chunk
whenever fewer than `replan_below` actions remain; the numba kernel of the 200 Hz control
loop (`KernelState`, seam blend 80 ms) turns chunks into commands; the simulation tracks them.
A return-to-rest episode starts at rest and first says a lead-in behaviour for 3 s, as the live
eval does, and the switch is planned as the policy process plans it (settling included).
Episodes are scored with `dualsys.behaviours.scoring` (the same functions the live eval
uses). `python -m dualsys.behaviours.evaluate --episodes 5` prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dualsys import config
from dualsys.behaviours.expert import BEHAVIOURS, Expert
from dualsys.behaviours.rollout import apply_setup, ground_truth, new_setup
from dualsys.behaviours.scoring import EVAL_EPISODE_S, LEAD_S, Score, Scorer, Trajectory, lead_in
from dualsys.config import RobotConfig
from dualsys.robot.model import OBJECTS

BLEND_NS = 80_000_000
#: Inference delay the offline eval plans for: the live policy's estimate (median chunk
#: latency ~12 ms fp32 x 1.25, `chunks.DelayEstimator`) rounds up to one 50 Hz action period.
LIVE_DELAY_NS = 20_000_000


class OfflineBrain:
    """System 2's builtin encoder and System 1's chunk sampler, from checkpoints."""

    def __init__(
        self,
        cfg: RobotConfig,
        policy_ckpt: Path,
        fusion_ckpt: Path,
        precision=None,
        grounding: bool = True,
    ) -> None:
        from dualsys.system1.policy import ChunkSampler, PolicySpec, load_checkpoint, optimise
        from dualsys.system2.fusion import StateFeatures, load_fusion
        from dualsys.system2.text import TextEncoder, ground_for_robot
        from dualsys.system2.vision import VisionEncoder

        torch.set_num_threads(1)
        self.text, self.vision = TextEncoder("cpu"), VisionEncoder("cpu")
        self.state = StateFeatures(cfg.limits())
        self.fusion = load_fusion(
            fusion_ckpt, self.text.dim, self.vision.dim, self.state.dim, cfg.system2.latent_dim
        )
        if grounding:
            ground_for_robot(self.text, cfg, self.fusion.text_side)
        model = load_checkpoint(policy_ckpt, PolicySpec.for_robot(cfg))
        precision = precision or cfg.policy.precision
        self.sampler = ChunkSampler(optimise(model, precision), model.spec, cfg, precision)

    @torch.inference_mode()
    def latent(self, image: np.ndarray, q: np.ndarray, dq: np.ndarray, text: str) -> np.ndarray:
        """One System 2 step."""
        emb = torch.tensor(self.text.head_input(text, self.fusion.text_side)[0])
        s = torch.from_numpy(self.state(q, dq))
        return self.fusion(
            emb, self.vision.features(image), s, self.fusion.pixels_of(image)
        ).numpy()


def run_policy_episode(sim, brain: OfflineBrain, cfg: RobotConfig, setup, text: str,
                       seconds: float = EVAL_EPISODE_S, rtc: bool = True,
                       delay_ns: int = LIVE_DELAY_NS,
                       latent_delay_ns: int = 0,
                       lead: tuple[str, float] | None = None) -> Trajectory:  # fmt: skip
    """One closed-loop episode from `setup` following instruction `text`.

    rtc: plan each new chunk as the live policy process does (`chunks.plan_next`: same grid,
    the actions due within `delay_ns` frozen, the rest of the old chunk as soft guidance for
    the inpainting sampler); False: every chunk sampled fresh from noise, starting now.
    latent_delay_ns: a latent made from the frame at time t reaches the policy at
    t + latent_delay_ns (live: System 2's step, transport and frame age; 0 = at once).
    lead: (instruction, seconds) said first, as the live eval's lead-in; the trajectory starts
    when `text` is said. A latent made for a new instruction makes a chunk due at once, and
    chunks are planned in settling mode for `policy.switch_settle_ms`, as the live policy
    process does. The sampler's noise is seeded with `setup.seed`: an episode is
    reproducible on its own, whatever ran before it.
    """
    from dualsys.robot.interface import RUN
    from dualsys.system1.chunks import Chunk, Settling, needs_replan, plan_next
    from dualsys.system1.interp import DT as I_DT
    from dualsys.system1.interp import MODE, MODE_CHUNK, N_ACT, T0, KernelState

    apply_setup(sim, setup)
    r = cfg.rates
    tick_ns = 1_000_000_000 // r.control_hz
    act_ns = 1_000_000_000 // r.action_hz
    per_action = r.control_hz // r.action_hz
    per_frame = r.control_hz // r.camera_hz
    H = cfg.policy.chunk_horizon
    k = KernelState(cfg.limits(), cfg.controlled_indices, H, tick_ns)
    k.reset(setup.q_start)
    cam = cfg.cameras[0].name
    latent, chunk_t0, current = None, None, None
    said = chunk_said = None  # instruction of the newest latent / of the current chunk
    pending: list[tuple[int, np.ndarray, str]] = []  # (due time, latent, said) not delivered
    ctrl = cfg.controlled_indices
    ts, qs, hands, objs = [], [], [], []
    lead_ticks = round(lead[1] * r.control_hz) if lead else 0
    settle = Settling(int(cfg.policy.switch_settle_ms * 1e6))
    brain.sampler.seed(setup.seed)
    for tick in range(lead_ticks + round(seconds * r.control_hz)):
        t_ns = tick * tick_ns
        s = sim.read_state()
        if tick % per_frame == 0:
            now_said = text if tick >= lead_ticks else lead[0]
            lat = brain.latent(sim.render(cam), s.q, s.dq, now_said)
            pending.append((t_ns + latent_delay_ns, lat, now_said))
        while pending and (pending[0][0] <= t_ns or latent is None):
            _, latent, said = pending.pop(0)
        if tick % per_action == 0:
            if tick >= lead_ticks:
                h, o = ground_truth(sim)
                ts.append((tick - lead_ticks) * tick_ns / 1e9)
                qs.append(s.q.copy())
                hands.append(h)
                objs.append(o)
            new_task = said != chunk_said
            if rtc and (new_task or needs_replan(current, t_ns, cfg.policy.replan_below)):
                plan = plan_next(current, t_ns, delay_ns, act_ns, hold=s.q[ctrl],
                                 settling=settle.at(t_ns, new_task))  # fmt: skip
                prefix = plan.prefix if plan.frozen else None
                acts = brain.sampler.sample(latent, s.q, s.dq, prefix, plan.weights)
                current, chunk_said = Chunk(acts, plan.t0_ns, act_ns), said
                new_t0 = plan.t0_ns
            elif not rtc and (chunk_t0 is None or H - (t_ns - chunk_t0) // act_ns
                              < cfg.policy.replan_below):  # fmt: skip
                acts, new_t0 = brain.sampler.sample(latent, s.q, s.dq), t_ns
            else:
                acts = None
            if acts is not None:
                k.actions[:] = acts
                k.I[N_ACT], k.I[T0], k.I[I_DT] = H, new_t0, act_ns
                k.I[MODE] = MODE_CHUNK
                k.blend(t_ns - tick_ns, BLEND_NS)
                chunk_t0 = t_ns
        k.step(t_ns)
        sim.write_command(k.q, k.v, RUN)
        sim.advance(tick_ns / 1e9)
    objs_a = np.array(objs)
    return Trajectory(
        np.array(ts), np.array(qs), np.array(hands),
        {n: objs_a[:, i] for i, n in enumerate(OBJECTS)},
    )  # fmt: skip


def evaluate(
    cfg: RobotConfig,
    brain: OfflineBrain,
    episodes: int,
    phrasings: dict[str, list[str]] | None = None,
    behaviours=BEHAVIOURS,
    seed: int = 10_000,
    progress=None,
    rtc: bool = True,
    latent_delay_ns: int = 0,
    with_lead_in: bool = True,
) -> dict:
    """Success per behaviour over `episodes` randomised episodes each (report dict).

    with_lead_in: a return_to_rest episode starts at rest and says `lead_in(b, e)` for LEAD_S,
    as the live eval does (False: from `new_setup`'s start pose, the policy starting fresh).
    """
    from dualsys.behaviours.kinematics import Kinematics
    from dualsys.robot.simulation import Simulation

    sim = Simulation(cfg)
    sim.configure()
    sim.activate()
    expert = Expert(cfg, Kinematics(cfg, sim.model, sim.jmap.qpos_adr))
    scorer = Scorer(cfg)
    report: dict = {"behaviours": {}}
    for b in behaviours:
        texts = (phrasings or {}).get(b, [b.replace("_", " ")])
        rows = []
        for e in range(episodes):
            text = texts[e % len(texts)]
            setup = new_setup(sim, expert, b, text, seed + 1000 * BEHAVIOURS.index(b) + e)
            lead = lead_in(b, e) if with_lead_in else None
            if lead is not None:  # as the live eval: from rest, via another behaviour
                setup.q_start = expert.default.copy()
            tr = run_policy_episode(
                sim, brain, cfg, setup, text, rtc=rtc, latent_delay_ns=latent_delay_ns,
                lead=None if lead is None else (lead, LEAD_S),
            )  # fmt: skip
            sc: Score = scorer.score(b, tr)
            rows.append({"instruction": text, "success": sc.success, **sc.values})
            if progress:
                progress(b, e, sc)
        ok = sum(r["success"] for r in rows)
        report["behaviours"][b] = {
            "success_rate": ok / max(1, len(rows)), "episodes": len(rows), "runs": rows,
        }  # fmt: skip
    sim.deactivate()
    return report


def table(report: dict, header: str) -> str:
    """Markdown table of a report."""
    lines = [header, "", "| behaviour | success | episodes |", "|---|---|---|"]
    for b, r in report["behaviours"].items():
        lines.append(f"| {b} | {100 * r['success_rate']:.0f}% | {r['episodes']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: offline evaluation of the shipped (or given) checkpoints."""
    from dualsys.behaviours.phrasings import eval_phrasings

    p = argparse.ArgumentParser(prog="python -m dualsys.behaviours.evaluate")
    p.add_argument("--robot", default="gr1")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--ckpt", default="", help="checkpoint dir (default: the robot config's)")
    p.add_argument(
        "--phrasings",
        default="",
        help="TOML phrasings, comma-separated files interleaved (default: training interleaved "
        "with held-out, as `dualsys eval`)",
    )
    p.add_argument("--behaviours", default="")
    p.add_argument("--report", default="", help="write the JSON report here")
    p.add_argument("--markdown", default="", help="append the markdown table to this file")
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--precision", default="", help="fp32 | bf16 | int8 (default: config)")
    p.add_argument(
        "--noise-scale",
        type=float,
        default=-1.0,
        help="override the policy's sampling noise scale (default: policy.json)",
    )
    p.add_argument("--no-grounding", action="store_true",
                   help="raw instruction embeddings to the fusion head (no bank)")  # fmt: skip
    p.add_argument("--no-rtc", action="store_true",
                   help="sample every chunk fresh (no real-time-chunking inpainting)")  # fmt: skip
    p.add_argument("--no-lead-in", action="store_true",
                   help="return to rest from a drawn start pose, no lead-in")  # fmt: skip
    p.add_argument("--latent-delay-ms", type=float, default=0.0,
                   help="deliver each latent this long after its frame (live lag)")  # fmt: skip
    args = p.parse_args(argv)
    cfg = config.load_robot(args.robot)
    if args.ckpt:
        pol, fus = Path(args.ckpt) / "policy.safetensors", Path(args.ckpt) / "fusion.safetensors"
    else:
        pol, fus = cfg.policy.checkpoint, cfg.system2.checkpoint
        if pol is None or fus is None:
            p.error(f"{cfg.path}: no policy/fusion checkpoint configured; pass --ckpt DIR")
    ph = args.phrasings or "training + held-out phrasings, interleaved"
    phrasings = eval_phrasings(cfg, args.phrasings or None)
    behaviours = tuple(args.behaviours.split(",")) if args.behaviours else BEHAVIOURS
    t0 = time.monotonic()
    brain = OfflineBrain(cfg, pol, fus, args.precision or None, not args.no_grounding)
    if args.noise_scale >= 0:
        brain.sampler.noise_scale = args.noise_scale
    report = evaluate(
        cfg, brain, args.episodes, phrasings, behaviours, args.seed,
        progress=lambda b, e, s: print(f"{b} #{e}: {'ok' if s.success else 'FAIL'} {s.values}"),
        rtc=not args.no_rtc, latent_delay_ns=int(args.latent_delay_ms * 1e6),
        with_lead_in=not args.no_lead_in,
    )  # fmt: skip
    report["wall_s"] = time.monotonic() - t0
    report["phrasings"] = ph
    import datetime
    import sys

    cmd = "python -m dualsys.behaviours.evaluate " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    header = (
        f"### Offline closed-loop eval ({datetime.date.today()}, 2 vCPU, `{cmd}`)\n\n"
        f"{args.episodes} episodes per behaviour, phrasings: {ph}; weights "
        f"`{pol}`; {'fresh chunks' if args.no_rtc else 'RTC inpainting as live'}; "
        f"noise scale {brain.sampler.noise_scale:g}; "
        f"grounding {'on' if brain.text.bank else 'off'}; "
        f"latent delay {args.latent_delay_ms:g} ms; "
        f"wall {report['wall_s']:.0f} s"
    )
    md = table(report, header)
    print(md)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(md + "\n")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
