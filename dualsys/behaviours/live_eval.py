"""Live evaluation: every behaviour through the full running system (`dualsys eval`).

The supervisor brings up the simulation, System 2 and System 1 as real processes with real
sockets (exactly `dualsys up`). Each episode: "return to rest" for a while, re-place the objects
(SceneReset, seeded), then `say` the episode's phrasing and record the robot state stream.
An episode the robot's task pack gives a lead-in (GR-1: return to rest, after another
behaviour in turn) first says that for the pack's `lead_s`, so it is scored on the way back
from a raised, waving or reaching pose, not from rest. The recorded trajectory (joint
positions at 200 Hz; palms and fingertips by the pack's forward kinematics of the recorded q;
object positions as the simulation reports them through the episode, 10 times a second,
interpolated to each sample's simulation time, so a pushed object is followed as offline) is
scored by the task pack
(`dualsys.tasks`) — the same criteria as the offline evaluation.

Switch latency: time from sending the instruction until the robot is `SWITCH_PROGRESS_RAD`
closer (joint space, controlled joints) to the pose it ends the episode in than it was at that
moment (so motion that was already going on elsewhere does not count as following).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from dualsys.behaviours.criteria import Trajectory
from dualsys.behaviours.scene_watch import SceneWatch
from dualsys.bus import Instruction, Latent, Publisher, RobotState, Subscriber
from dualsys.bus.limits import receive_spec
from dualsys.config import RobotConfig
from dualsys.robot.model import build_model
from dualsys.scene import scene_of
from dualsys.supervisor import Supervisor, UpOptions
from dualsys.system2.client import new_instruction_id
from dualsys.system2.instruction import validate_instruction
from dualsys.tasks import task_pack

SWITCH_PROGRESS_RAD = 0.05
SWITCH_MIN_RAD = 0.1
REST_PHRASE = "return to rest"
REST_S = 3.0
SAMPLE_HZ = 50


@dataclass
class EpisodeResult:
    """One live episode."""

    behaviour: str
    phrasing: str
    seed: int
    success: bool
    switch_latency_s: float
    values: dict[str, float] = field(default_factory=dict)
    reason: str = ""


class LiveEvaluator:
    """Runs episodes against a supervised live system (call `start`, `episode`..., `stop`)."""

    def __init__(
        self,
        cfg: RobotConfig,
        run_dir: Path,
        untrained: bool = False,
        record: Path | None = None,
        system2_server: str = "",
    ) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        opts = UpOptions(untrained=untrained, record=record, system2_server=system2_server)
        self.sup = Supervisor(cfg, self.run_dir, opts)
        model, jmap = build_model(cfg)
        self.pack = task_pack(cfg)
        self.kin = self.pack.kinematics(model, jmap.qpos_adr)
        self.ctrl = cfg.controlled_indices

    def start(self) -> None:
        """Bring the system up and open the evaluation links."""
        self.sup.start()
        self.ctx = zmq.Context()
        self.scene = SceneWatch(self.ctx, self.cfg, self.run_dir, scene_of(self.cfg).object_names)
        # a persistent instruction link: no connect (slow-joiner) delay inside the measurement
        self.instr = Publisher(
            self.ctx, self.cfg.endpoint("instruction", self.run_dir), "eval", bind=False
        )
        self.latent = Subscriber(
            self.ctx,
            self.cfg.endpoint("latent", self.run_dir),
            (Latent,),
            **receive_spec(self.cfg, "latent"),
        )
        self.states = Subscriber(
            self.ctx,
            self.cfg.endpoint("state", self.run_dir),
            (RobotState,),
            latest=False,
            hwm=100_000,
            **receive_spec(self.cfg, "state"),
        )

    def _wait(
        self,
        seconds: float,
        record: list | None = None,
        truths: tuple[int, list] | None = None,
    ) -> None:
        """Keep the supervisor polled for `seconds`; optionally record (t, q, sim time) of
        every state and, for `truths` = (episode, list), every SceneTruth of that episode."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.sup.poll():
                raise RuntimeError(f"system failed during evaluation: {self.sup.failure}")
            while (msg := self.states.recv_nowait()) is not None:
                if record is not None:
                    record.append((msg.header.t_mono_ns, msg.q.copy(), msg.sim_time))
            if truths is not None:
                self.scene.follow(*truths)
            time.sleep(0.01)

    def _say(self, text: str) -> float:
        """Send an instruction on the already-connected link; return the seconds System 2
        took to publish the first latent computed with it."""
        clean = validate_instruction(text, self.cfg.system2.max_instruction_chars)
        ident = new_instruction_id()
        t0 = time.monotonic()
        next_send = 0.0
        while (now := time.monotonic()) < t0 + 5.0:
            if now >= next_send:
                self.instr.send(Instruction(text=clean, id=ident))
                next_send = now + 0.25
            msg = self.latent.recv(timeout_ms=20)
            if msg is not None and msg.instruction_id == ident:
                return time.monotonic() - t0
        raise RuntimeError(f"System 2 did not adopt the instruction {text!r} within 5 s")

    def _reset_scene(self, seed: int, episode: int) -> dict[str, np.ndarray]:
        """Re-place the objects; their positions from the SceneTruth acknowledging it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.scene.reset(seed, episode)
            resend = time.monotonic() + 0.6
            while time.monotonic() < resend:
                self._wait(0.05)
                objects = self.scene.truth(episode)
                if objects is not None:
                    return objects
        raise RuntimeError(
            "the simulation did not acknowledge the scene reset (driver not sim?); "
            f"scene truth refused: {dict(self.scene.dropped) or 'none'}"
        )

    def episode(self, behaviour: str, phrasing: str, seed: int, index: int) -> EpisodeResult:
        """Rest, re-place objects, [lead-in behaviour], say the phrasing, record, score."""
        self._say(REST_PHRASE)
        self._wait(REST_S)
        objects = self._reset_scene(seed, index)
        self._wait(0.3)
        if (lead := self.pack.lead_in(behaviour, index)) is not None:
            self._say(lead)
            self._wait(self.pack.lead_s)
        record: list[tuple[int, np.ndarray]] = []
        while self.states.recv_nowait() is not None:  # drop what came before the instruction
            pass
        trips0 = self._velocity_trips()
        truths: list[tuple[float, dict[str, np.ndarray]]] = []
        self.scene.follow(index, truths)  # those sent before the instruction count too
        t_say = time.monotonic_ns()
        adopt_s = self._say(phrasing)
        self._wait(self.pack.eval_episode_s, record, (index, truths))
        if len(record) < 10:
            raise RuntimeError("no robot state received during the episode")
        t = (np.array([r[0] for r in record]) - t_say) / 1e9
        q = np.stack([r[1] for r in record])
        sim_t = np.array([r[2] for r in record])
        latency = _switch_latency(t, q[:, self.ctrl])
        keep = _subsample(t, SAMPLE_HZ)
        t, q, sim_t = t[keep], q[keep], sim_t[keep]
        palms, tips = self.kin.hands_batch(q)
        traj = Trajectory(
            t=t,
            q=q,
            hands=np.concatenate([palms, tips], axis=1),
            objects=objects_at(sim_t, truths, objects),
        )
        score = self.pack.score(behaviour, traj)
        values = dict(score.values, system2_adopt_s=adopt_s)
        trips1 = self._velocity_trips()
        if trips0 is not None and trips1 is not None:
            values["velocity_trips"] = trips1 - trips0  # robot held for them (Stats at 2 Hz)
        return EpisodeResult(
            behaviour, phrasing, seed, bool(score.success), latency, values, score.reason
        )

    def _velocity_trips(self) -> int | None:
        """The robot's velocity-monitor trip count from its latest Stats (None before any)."""
        robot = self.sup.children.get("robot")
        value = robot.stats.get("velocity_trips") if robot is not None else None
        return None if value is None else int(value)

    def stop(self) -> dict[str, int | None]:
        """Close the links and stop the system cleanly."""
        for sock in (self.scene, self.states, self.instr, self.latent):
            sock.close()
        self.ctx.destroy(0)
        return self.sup.stop()


def objects_at(
    sim_t: np.ndarray,
    truths: list[tuple[float, dict[str, np.ndarray]]],
    at_reset: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Object name -> (T, 3) positions at the simulation times `sim_t`: linear between the
    SceneTruth reports `truths` (sim time, positions), the first report's before it and the
    last one's after it; the positions at the reset where no report came."""
    if not truths:
        return {o: np.repeat(p[None], len(sim_t), axis=0) for o, p in at_reset.items()}
    keep = [0]
    for i in range(1, len(truths)):  # strictly increasing times, as np.interp needs
        if truths[i][0] > truths[keep[-1]][0]:
            keep.append(i)
    times = np.array([truths[i][0] for i in keep])
    out = {}
    for o in at_reset:
        pos = np.stack([truths[i][1][o] for i in keep])
        out[o] = np.stack([np.interp(sim_t, times, pos[:, k]) for k in range(3)], axis=1)
    return out


def _switch_latency(t: np.ndarray, q: np.ndarray) -> float:
    """Seconds from the instruction (t=0) until the robot is SWITCH_PROGRESS_RAD closer (L2
    over the controlled joints) to where the episode ends (the mean of its last 0.5 s) than it
    was at t=0. NaN when the two poses are closer than SWITCH_MIN_RAD (nothing to follow) or
    the robot never gets there."""
    i0 = min(int(np.searchsorted(t, 0.0)), len(t) - 1)
    start, final = q[i0], q[t >= t[-1] - 0.5].mean(axis=0)
    total = float(np.linalg.norm(final - start))
    if total < SWITCH_MIN_RAD:
        return float("nan")
    progress = total - np.linalg.norm(q[i0:] - final, axis=1)
    hit = np.flatnonzero(progress >= SWITCH_PROGRESS_RAD)
    return float(t[i0 + hit[0]]) if len(hit) else float("nan")


def _subsample(t: np.ndarray, hz: float) -> np.ndarray:
    """Indices keeping about `hz` samples per second."""
    bins = np.floor(t * hz).astype(np.int64)
    return np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])


def run_live_eval(
    cfg: RobotConfig,
    run_dir: Path,
    phrasings: dict[str, list[str]],
    episodes: int,
    seed: int = 0,
    untrained: bool = False,
    progress: Callable[[EpisodeResult], None] | None = None,
    record: Path | None = None,
    system2_server: str = "",
) -> tuple[list[EpisodeResult], dict[str, int | None], Supervisor]:
    """All episodes of all behaviours in `phrasings`, through one live system (record: an
    MCAP file for every bus topic, as `dualsys up --record`; system2_server: a remote System 2
    reached through the link, as `dualsys up --system2`)."""
    ev = LiveEvaluator(cfg, run_dir, untrained, record, system2_server)
    results: list[EpisodeResult] = []
    try:
        ev.start()
        index = 0
        for behaviour, texts in phrasings.items():
            for k in range(episodes):
                index += 1
                res = ev.episode(behaviour, texts[k % len(texts)], seed + index, index)
                results.append(res)
                if progress is not None:
                    progress(res)
    finally:
        codes = ev.stop()
    return results, codes, ev.sup


def summarise(results: list[EpisodeResult], heldout: set[str] | None = None) -> dict[str, object]:
    """behaviours.<name>.{success_rate, episodes, heldout.{successes, episodes}},
    switch_latency_s.{p50, p99}; `heldout`: the phrasings never seen in training."""
    out: dict[str, object] = {"behaviours": {}}
    heldout = heldout or set()
    for name in dict.fromkeys(r.behaviour for r in results):
        rs = [r for r in results if r.behaviour == name]
        ho = [r for r in rs if r.phrasing in heldout]
        out["behaviours"][name] = {
            "success_rate": sum(r.success for r in rs) / len(rs),
            "episodes": len(rs),
            "heldout": {"successes": sum(r.success for r in ho), "episodes": len(ho)},
            "switch_latency_s_p50": _pct([r.switch_latency_s for r in rs], 50),
            "failures": [
                {"phrasing": r.phrasing, "seed": r.seed, "reason": r.reason}
                for r in rs
                if not r.success
            ],
        }
    lat = [r.switch_latency_s for r in results]
    out["switch_latency_s"] = {"p50": _pct(lat, 50), "p99": _pct(lat, 99)}
    out["switch_latency_missing"] = int(sum(1 for x in lat if x != x))
    return out


def _pct(xs: list[float], p: float) -> float | None:
    vals = [x for x in xs if x == x]
    return float(np.percentile(vals, p)) if vals else None
