"""Offline closed-loop evaluation: System 2 encoder + System 1 policy + interp kernel + sim.

Everything runs in one process on simulated time (no sockets, no wall clock), on the live
system's own components and rates: every 1/camera_hz s the camera is rendered and the System
2 encoder the robot config names (from the encoder registry, built as the System 2 process
builds it) makes a latent; System 1's planning step (`dualsys.system1.planner.Planner`, the
one the policy process runs: a chunk is due when the current one runs low or the instruction
changes, planned with real-time chunking and settling) samples chunks with the policy
(`policy.build`, the inference precision of the robot config); each chunk is handed to the
200 Hz control loop's numba kernel through the control loop's own hand-over
(`KernelState.take_chunk`, seam blend included); the simulation tracks the commands. A
return-to-rest episode starts at rest and first says a lead-in behaviour for 3 s, as the live
eval does. Episodes are scored by the robot's task pack (`dualsys.tasks`: the same criteria the
live eval uses). `python -m dualsys.behaviours.evaluate --episodes 5` prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from dualsys import config
from dualsys.behaviours.criteria import Score, Trajectory, plain_values
from dualsys.behaviours.rollout import apply_setup, ground_truth, new_setup
from dualsys.config import RobotConfig
from dualsys.tasks import task_pack

#: Inference delay the offline eval plans for: the live policy's estimate (median chunk
#: latency ~12 ms fp32 x 1.25, `chunks.DelayEstimator`) rounds up to one 50 Hz action period.
LIVE_DELAY_NS = 20_000_000


@dataclasses.dataclass(frozen=True)
class LiveTiming:
    """System 2's timing as the live process has it, for the offline loop.

    Live, System 2 steps on its own clock (`system2_target_hz`), not on the camera's: each
    step encodes the newest camera frame (0 to one camera period old) with the newest robot
    state, and its latent reaches the policy a step time later; a new instruction gets a step
    at once. Here each episode draws System 2's phase against the camera (uniform over one
    period), and each step's time is `step_min_ns` plus an exponential with mean
    `step_extra_ns`, capped at `step_max_ns` (defaults: the live System 2 process on this
    2-core box, step p50 17 / p99 42 / max 112 ms). Drawn from `setup.seed`: an episode is
    reproducible on its own.
    """

    step_min_ns: int = 12_000_000
    step_extra_ns: int = 6_000_000
    step_max_ns: int = 110_000_000

    def step_ns(self, rng: np.random.Generator) -> int:
        """One System 2 step's time (frame taken to latent delivered)."""
        d = self.step_min_ns + rng.exponential(self.step_extra_ns)
        return int(min(d, self.step_max_ns))


class OfflineBrain:
    """System 2's encoder and System 1's chunk sampler, built as the live processes build
    them, from the given checkpoints (default: the robot config's).

    encoder: a registry name (`dualsys.system2.encoders`; default `system2.encoder` of the
    config), so any registered encoder can be evaluated offline. grounding=False turns the
    instruction grounding off (`system2.grounding_temperature` 0).
    """

    def __init__(
        self,
        cfg: RobotConfig,
        policy_ckpt: Path | None = None,
        fusion_ckpt: Path | None = None,
        precision: str | None = None,
        grounding: bool = True,
        encoder: str | None = None,
    ) -> None:
        import torch

        from dualsys.system1 import policy
        from dualsys.system2 import encoders

        s2 = cfg.system2
        s2 = dataclasses.replace(
            s2,
            checkpoint=fusion_ckpt or s2.checkpoint,
            grounding_temperature=s2.grounding_temperature if grounding else 0.0,
        )
        pol = dataclasses.replace(cfg.policy, checkpoint=policy_ckpt or cfg.policy.checkpoint)
        cfg = dataclasses.replace(cfg, system2=s2, policy=pol)
        torch.set_num_threads(1)  # as the System 2 process
        self.encoder = encoders.create(cfg, name=encoder)
        self.encoder.configure()
        self.sampler, self.info = policy.build(cfg, precision=precision)

    def latent(self, image: np.ndarray, q: np.ndarray, dq: np.ndarray, text: str) -> np.ndarray:
        """One System 2 step."""
        return self.encoder.encode(image, q, dq, text).vector

    @property
    def grounded(self) -> bool:
        """True when the encoder grounds instructions in the trained phrasings."""
        text = getattr(self.encoder, "text", None)
        return getattr(text, "bank", None) is not None


def run_policy_episode(sim, brain: OfflineBrain, cfg: RobotConfig, setup, text: str,
                       seconds: float | None = None, rtc: bool = True,
                       delay_ns: int = LIVE_DELAY_NS,
                       latent_delay_ns: int = 0,
                       lead: tuple[str, float] | list[tuple[str, float]] | None = None,
                       live_timing: LiveTiming | None = None) -> Trajectory:  # fmt: skip
    """One closed-loop episode from `setup` following instruction `text`.

    Chunks come from the policy process's planning step (`planner.Planner`) and reach the
    kernel through the control loop's hand-over (`KernelState.take_chunk`).
    rtc: real-time chunking as live (the actions due within `delay_ns` frozen, the rest of
    the old chunk as soft guidance); False: back to back, each chunk fresh from noise and
    starting `delay_ns` from now (`chunks.back_to_back`).
    latent_delay_ns: a latent made from the frame at time t reaches the policy at
    t + latent_delay_ns (live: System 2's step, transport and frame age; 0 = at once).
    live_timing: System 2 on its own clock as live (`LiveTiming`; latent_delay_ns unused);
    None: a latent per camera frame, from that frame's image and state.
    lead: (instruction, seconds) said first, as the live eval's lead-in, or a list of them
    said in turn (the live eval's rest, then the lead-in); the trajectory starts when `text`
    is said. The sampler's noise is seeded with `setup.seed`: an episode is reproducible on
    its own, whatever ran before it. seconds: default the task pack's
    evaluated episode length.
    """
    from dualsys.robot.interface import RUN
    from dualsys.system1.interp import KernelState
    from dualsys.system1.planner import Planner

    if seconds is None:
        seconds = task_pack(cfg).eval_episode_s
    apply_setup(sim, setup)
    r = cfg.rates
    tick_ns = 1_000_000_000 // r.control_hz
    per_action = r.control_hz // r.action_hz
    per_frame = r.control_hz // r.camera_hz
    k = KernelState(cfg.limits(), cfg.controlled_indices, cfg.policy.chunk_horizon, tick_ns)
    k.reset(setup.q_start)
    planner = Planner.for_robot(cfg, brain.sampler, rtc=rtc)
    cam = cfg.cameras[0].name
    latent = instruction = None  # the newest latent delivered and its instruction id
    pending: list[tuple[int, np.ndarray, int]] = []  # (due time, latent, id) not delivered
    ts, qs, hands, objs = [], [], [], []
    leads = [] if lead is None else [lead] if isinstance(lead[0], str) else list(lead)
    says = [t for t, _ in leads] + [text]  # instruction id i says says[i]
    switches = np.cumsum([round(sec * r.control_hz) for _, sec in leads], dtype=int).tolist()
    lead_ticks = switches[-1] if switches else 0
    brain.sampler.seed(setup.seed)
    if live_timing is not None:
        rng = np.random.default_rng([setup.seed, 2])
        s2_period = round(1e9 / r.system2_target_hz)
        next_s2 = int(rng.integers(0, 1_000_000_000 // r.camera_hz))  # phase vs the camera
        frame = None
    for tick in range(lead_ticks + round(seconds * r.control_hz)):
        t_ns = tick * tick_ns
        s = sim.read_state()
        said = sum(tick >= w for w in switches)  # the id of the instruction said now
        if live_timing is None:
            if tick % per_frame == 0:
                lat = brain.latent(sim.render(cam), s.q, s.dq, says[said])
                pending.append((t_ns + latent_delay_ns, lat, said))
        else:
            if tick % per_frame == 0:
                frame = sim.render(cam)
            if t_ns >= next_s2 or tick in switches:  # its clock, or a new instruction
                lat = brain.latent(frame, s.q, s.dq, says[said])
                step = live_timing.step_ns(rng)
                pending.append((t_ns + step, lat, said))
                next_s2 = t_ns + max(s2_period, step)  # one step at a time, as live
        # a latent is delivered when due (frame timing: the very first one at once)
        while pending and (pending[0][0] <= t_ns or (latent is None and live_timing is None)):
            _, latent, instruction = pending.pop(0)
        if tick % per_action == 0:
            if tick >= lead_ticks:
                h, o = ground_truth(sim)
                ts.append((tick - lead_ticks) * tick_ns / 1e9)
                qs.append(s.q.copy())
                hands.append(h)
                objs.append(o)
            out = None
            if latent is not None:  # as live: no chunk before System 2's first latent
                out = planner.step(t_ns, delay_ns, latent, instruction, s.q, s.dq)
            if out is not None and out.chunk is not None:
                c = out.chunk
                k.take_chunk(c.actions, c.t0_ns, c.dt_ns, t_ns - tick_ns, follow=True)
        k.step(t_ns)
        sim.write_command(k.q, k.v, RUN)
        sim.advance(tick_ns / 1e9)
    objs_a = np.array(objs)
    return Trajectory(
        np.array(ts), np.array(qs), np.array(hands),
        {n: objs_a[:, i] for i, n in enumerate(sim.scene.object_names)},
    )  # fmt: skip


def evaluate(
    cfg: RobotConfig,
    brain: OfflineBrain,
    episodes: int,
    phrasings: dict[str, list[str]] | None = None,
    behaviours: tuple[str, ...] | None = None,
    seed: int = 10_000,
    progress=None,
    rtc: bool = True,
    latent_delay_ns: int = 0,
    with_lead_in: bool = True,
    live_timing: LiveTiming | None = None,
    rest_first: bool = False,
) -> dict:
    """Success per behaviour over `episodes` randomised episodes each (report dict).

    behaviours: default all of the task pack's.
    with_lead_in: an episode the task pack gives a lead-in (`pack.lead_in(b, e)`) starts at
    rest and says it for `pack.lead_s` first, as the live eval does (False: from `new_setup`'s
    start pose, the policy starting fresh).
    live_timing: System 2 on its own clock as live (`run_policy_episode`).
    rest_first: every episode starts at rest and first says the live eval's rest instruction
    for its rest time (then the lead-in, if any), as `dualsys eval` runs an episode.
    """
    from dualsys.behaviours.live_eval import REST_PHRASE, REST_S
    from dualsys.robot.simulation import Simulation

    pack = task_pack(cfg)
    behaviours = pack.behaviours if behaviours is None else behaviours
    sim = Simulation(cfg)
    sim.configure()
    sim.activate()
    expert = pack.expert(pack.kinematics(sim.model, sim.jmap.qpos_adr))
    report: dict = {"behaviours": {}}
    for b in behaviours:
        texts = (phrasings or {}).get(b, [b.replace("_", " ")])
        rows = []
        for e in range(episodes):
            text = texts[e % len(texts)]
            setup = new_setup(sim, expert, b, text, seed + 1000 * pack.behaviours.index(b) + e)
            lead = pack.lead_in(b, e) if with_lead_in else None
            leads = [] if lead is None else [(lead, pack.lead_s)]
            if rest_first:
                leads.insert(0, (REST_PHRASE, REST_S))
            if leads:  # as the live eval: from rest, via the instructions said first
                setup.q_start = expert.default.copy()
            tr = run_policy_episode(
                sim, brain, cfg, setup, text, rtc=rtc, latent_delay_ns=latent_delay_ns,
                lead=leads or None, live_timing=live_timing,
            )  # fmt: skip
            sc: Score = pack.score(b, tr)
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
    p.add_argument(
        "--precision", default="", help="fp32 | fp32-ort | bf16 | int8 (default: config)"
    )
    p.add_argument("--encoder", default="",
                   help="System 2 encoder registry name (default: the config's)")  # fmt: skip
    p.add_argument(
        "--noise-scale",
        type=float,
        default=-1.0,
        help="override the policy's sampling noise scale (default: policy.json)",
    )
    p.add_argument("--no-grounding", action="store_true",
                   help="raw instruction embeddings to the fusion head (no bank)")  # fmt: skip
    p.add_argument("--no-rtc", action="store_true",
                   help="chunks back to back, fresh from noise (no RTC)")  # fmt: skip
    p.add_argument("--no-lead-in", action="store_true",
                   help="return to rest from a drawn start pose, no lead-in")  # fmt: skip
    p.add_argument("--latent-delay-ms", type=float, default=0.0,
                   help="deliver each latent this long after its frame (live lag)")  # fmt: skip
    p.add_argument(
        "--live-timing",
        action="store_true",
        help="System 2 on its own clock as live: random phase against the camera, newest "
        "state, drawn step times (LiveTiming; --latent-delay-ms unused)",
    )
    p.add_argument(
        "--rest-first",
        action="store_true",
        help="start every episode at rest and say the live eval's rest instruction first "
        "(3 s), as `dualsys eval` does",
    )
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
    behaviours = tuple(args.behaviours.split(",")) if args.behaviours else None
    t0 = time.monotonic()
    brain = OfflineBrain(
        cfg, pol, fus, args.precision or None, not args.no_grounding, args.encoder or None
    )
    if args.noise_scale >= 0:
        brain.sampler.noise_scale = args.noise_scale
    report = evaluate(
        cfg, brain, args.episodes, phrasings, behaviours, args.seed,
        progress=lambda b, e, s: print(
            f"{b} #{e}: {'ok' if s.success else 'FAIL ' + s.reason} ({plain_values(s.values)})"
        ),
        rtc=not args.no_rtc, latent_delay_ns=int(args.latent_delay_ms * 1e6),
        with_lead_in=not args.no_lead_in, live_timing=LiveTiming() if args.live_timing else None,
        rest_first=args.rest_first,
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
        f"grounding {'on' if brain.grounded else 'off'}; "
        + (
            "System 2 timed as live (LiveTiming); "
            if args.live_timing
            else f"latent delay {args.latent_delay_ms:g} ms; "
        )
        + ("rest said first, as live; " if args.rest_first else "")
        + f"wall {report['wall_s']:.0f} s"
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
