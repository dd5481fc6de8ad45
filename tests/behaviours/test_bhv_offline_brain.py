"""The offline evaluator runs System 2 encoders from the registry (any registered one, not
only the builtin) and System 1's own planning step and chunk hand-over."""

from __future__ import annotations

import numpy as np

from dualsys.system2 import encoders
from dualsys.system2.encoders.base import Encoder, EncodeResult


@encoders.register("test_frame_mean")
class FrameMeanEncoder(Encoder):
    """A registered third-party-style encoder: the latent is the frame's mean colour and the
    instruction's length, spread over the latent (enough to tell inputs apart)."""

    def configure(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def encode(self, image: np.ndarray, q: np.ndarray, dq: np.ndarray, text: str) -> EncodeResult:
        self.seen.append((float(image.mean()), text))
        v = np.zeros(self.latent_dim, np.float32)
        v[:3] = image.reshape(-1, 3).mean(0) / 255.0
        v[3] = len(text) / 100.0
        return EncodeResult(v, 0.0, False, 0.0, 0.0)


def test_any_registered_encoder_drives_the_offline_episode(cfg, sim, expert, monkeypatch):
    from dualsys.behaviours.evaluate import OfflineBrain, run_policy_episode
    from dualsys.behaviours.rollout import new_setup
    from dualsys.system1.planner import Planner

    brain = OfflineBrain(cfg, encoder="test_frame_mean")
    assert isinstance(brain.encoder, FrameMeanEncoder) and not brain.grounded
    setup = new_setup(sim, expert, "raise_both_arms", "raise both arms", 7)
    chunks = []
    real_step = Planner.step

    def counting(self, *a):  # the planner's own step, counted
        out = real_step(self, *a)
        chunks.append(out)
        return out

    monkeypatch.setattr(Planner, "step", counting)
    tr = run_policy_episode(
        sim, brain, cfg, setup, "raise both arms", seconds=0.5, lead=("wave", 0.3)
    )
    frames = round(0.8 * cfg.rates.camera_hz)
    assert len(brain.encoder.seen) == frames  # one latent per camera frame, rendered frames
    assert [t for _, t in brain.encoder.seen] == ["wave"] * 3 + ["raise both arms"] * 5
    assert all(m > 5 for m, _ in brain.encoder.seen)
    # the live planning step ran at every action tick and planned at the switch
    assert len(chunks) == round(0.8 * cfg.rates.action_hz)
    made = [c for c in chunks if c is not None]
    assert made[0].chunk.chunk_id == 1 and len(made) >= 2
    assert len(tr.t) == round(0.5 * cfg.rates.action_hz) and np.isfinite(tr.q).all()


def test_live_timing_runs_system2_on_its_own_clock(cfg, sim, expert, monkeypatch):
    """LiveTiming: System 2 steps at its own rate with a drawn phase against the camera, on
    the newest rendered frame and the newest state, plus one step at once for a new
    instruction; the same episode seed gives the same steps."""
    from dualsys.behaviours.evaluate import LiveTiming, OfflineBrain, run_policy_episode
    from dualsys.behaviours.rollout import new_setup

    brain = OfflineBrain(cfg, encoder="test_frame_mean")
    per_frame = cfg.rates.control_hz // cfg.rates.camera_hz
    s2_ticks = round(cfg.rates.control_hz / cfg.rates.system2_target_hz)
    switches = (30, 70)  # rest, then a lead-in, then the text; between camera frames

    def run(seed: int) -> tuple[list, list]:
        clock = {"tick": 0, "frame": None, "q": None}
        renders, steps = [], []
        real_render, real_read, real_advance = sim.render, sim.read_state, sim.advance

        def render(cam):
            clock["frame"] = real_render(cam)
            renders.append(clock["tick"])
            return clock["frame"]

        def read_state():
            s = real_read()
            clock["q"] = s.q.copy()
            return s

        def advance(dt):
            real_advance(dt)
            clock["tick"] += 1

        def latent(image, q, dq, text):
            assert image is clock["frame"]  # the newest rendered frame
            np.testing.assert_array_equal(q, clock["q"])  # the newest state
            steps.append((clock["tick"], text))
            return brain.encoder.encode(image, q, dq, text).vector

        monkeypatch.setattr(sim, "render", render)
        monkeypatch.setattr(sim, "read_state", read_state)
        monkeypatch.setattr(sim, "advance", advance)
        monkeypatch.setattr(brain, "latent", latent)
        setup = new_setup(sim, expert, "raise_both_arms", "raise both arms", seed)
        hz = cfg.rates.control_hz
        run_policy_episode(sim, brain, cfg, setup, "raise both arms", seconds=0.65,
                           lead=[("return to rest", 30 / hz), ("wave", 40 / hz)],
                           live_timing=LiveTiming())  # fmt: skip
        monkeypatch.undo()
        return renders, steps

    renders, steps = run(7)
    total = switches[-1] + round(0.65 * cfg.rates.control_hz)
    assert renders == list(range(0, total, per_frame))  # the camera on its own clock
    ticks = [t for t, _ in steps]
    said = ["return to rest", "wave", "raise both arms"]
    assert [text for _, text in steps] == [said[sum(t >= w for w in switches)] for t in ticks]
    assert set(switches) <= set(ticks)  # a new instruction is encoded at once
    gaps = np.diff(ticks)[~np.isin(ticks[1:], switches)]  # the switches' steps are early
    assert ticks[0] < per_frame and (gaps >= s2_ticks).all()
    assert len(ticks) >= 3
    assert run(7)[1] == steps  # reproducible from the episode seed
    phases = {run(s)[1][0][0] for s in (8, 9, 10, 11)}
    assert len(phases | {ticks[0]}) > 1  # the phase against the camera is drawn


def test_live_timing_step_times_match_the_live_process():
    """The drawn System 2 step times have the live process's shape (p50 ~17 ms, p99 ~42 ms,
    capped)."""
    from dualsys.behaviours.evaluate import LiveTiming

    rng = np.random.default_rng(0)
    lt = LiveTiming()
    d = np.array([lt.step_ns(rng) for _ in range(20_000)]) / 1e6
    assert 15 <= np.percentile(d, 50) <= 19 and 35 <= np.percentile(d, 99) <= 45
    assert d.min() >= 12 and d.max() <= 110
