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
