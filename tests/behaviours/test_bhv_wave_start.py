"""A wave asked for while the hand is already up and still (shipped GR-1 weights, offline
closed loop): the sampler's small noise (policy.json `noise_scale`) gets the swing going; a
deterministic sampler (noise 0) holds the hand up and never swings, the live eval's "hand up,
0 swings" failure."""

from __future__ import annotations

from dualsys.tasks.gr1_table.expert import WAVE_HZ
from dualsys.tasks.gr1_table.scoring import Scorer

TEXT = "wave the left hand"


def _wave_from_mid_swing(cfg, sim, expert, brain, noise_scale: float, seed: int):
    from dualsys.behaviours.evaluate import run_policy_episode
    from dualsys.behaviours.rollout import new_setup

    setup = new_setup(sim, expert, "wave_left_hand", TEXT, seed)
    plan = expert.plan("wave_left_hand", expert.default, setup.objects)
    # the swing's middle (it runs from one end to the other in half a period), standing still
    setup.q_start = plan(plan.segments[0].t1 + 0.25 / WAVE_HZ)
    shipped = brain.sampler.noise_scale
    brain.sampler.noise_scale = noise_scale
    try:
        tr = run_policy_episode(sim, brain, cfg, setup, TEXT, latent_delay_ns=50_000_000)
    finally:
        brain.sampler.noise_scale = shipped
    return Scorer(cfg).score("wave_left_hand", tr)


#: six start placements: whether one episode's swing starts is chaotic in its inputs (a float32
#: rounding of System 2's state features, or another inference form of the same maths, flips
#: single episodes either way), so the test compares the sampler settings over several
SEEDS = tuple(range(18_101, 18_107))


def test_a_wave_starts_from_a_still_raised_hand(cfg, sim, expert, brain):
    shipped = brain.sampler.noise_scale
    assert shipped > 0
    waved = []
    for seed in SEEDS:
        score = _wave_from_mid_swing(cfg, sim, expert, brain, shipped, seed)
        if score.success:
            waved.append(score)
        stuck = _wave_from_mid_swing(cfg, sim, expert, brain, 0.0, seed)
        assert not stuck.success and stuck.values["swings"] == 0, (seed, stuck.values)
        if score.success:  # held up, still, where the noisy sampler swings down
            assert stuck.values["hand_min_z"] > score.values["hand_min_z"], seed
    assert waved, "the shipped noise scale started no wave"
