"""A policy checkpoint owns its contract: action rate, horizon, normalisation, sampler settings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dualsys import config
from dualsys.system1 import policy as P  # noqa: N812

CFG = config.load_robot("gr1")


def small_cfg(checkpoint=None, cfg=CFG):
    pol = dataclasses.replace(cfg.policy, width=64, layers=2, heads=2, checkpoint=checkpoint)
    return dataclasses.replace(cfg, policy=pol)


def _saved(tmp_path, cfg=CFG):
    cfg = small_cfg(cfg=cfg)
    model = P.FlowPolicy(P.PolicySpec.for_robot(cfg), P.PolicyNorm.for_robot(cfg))
    return P.save_checkpoint(model, tmp_path / "policy.safetensors", P.runtime_settings(cfg))


def test_a_different_action_rate_is_an_error_naming_both(tmp_path) -> None:
    path = _saved(tmp_path)  # trained at 50 Hz
    rates = dataclasses.replace(CFG.rates, action_hz=25)
    cfg = dataclasses.replace(small_cfg(path), rates=rates)
    with pytest.raises(P.PolicyError, match=r"action_hz is 50, the robot config needs 25"):
        P.build(cfg)


def test_a_different_horizon_is_an_error_naming_both(tmp_path) -> None:
    path = _saved(tmp_path)
    cfg = small_cfg(path)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, chunk_horizon=8))
    with pytest.raises(P.PolicyError, match=r"horizon is 16, the robot config needs 8"):
        P.build(cfg)


@pytest.mark.parametrize("key", ["action_hz", "normalisation"])
def test_a_checkpoint_without_its_contract_is_refused(tmp_path, key) -> None:
    path = _saved(tmp_path)
    raw = json.loads(path.with_suffix(".json").read_text())
    del raw[key]
    path.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(P.PolicyError, match=f"{key} is missing"):
        P.build(small_cfg(path))


def test_the_checkpoint_normalisation_is_used_not_the_robot_limits(tmp_path) -> None:
    """Weights keep the normalisation they were trained with when the robot's limits change."""
    path = _saved(tmp_path)
    wider = {j.name: dataclasses.replace(j, max=j.max + 0.5) for j in CFG.joints}
    moved = dataclasses.replace(CFG, joints=tuple(wider[j.name] for j in CFG.joints))
    assert not np.array_equal(moved.limits()["max"], CFG.limits()["max"])
    sampler, _ = P.build(small_cfg(path, cfg=moved), precision="fp32")
    trained = P.PolicyNorm.for_robot(CFG)
    q = CFG.limits()["default"]
    dq = np.linspace(-1, 1, CFG.n_joints)
    np.testing.assert_array_equal(sampler.state_vector(q, dq), trained.state(q, dq))
    np.testing.assert_array_equal(sampler.mid, trained.action_mid)
    np.testing.assert_array_equal(sampler.half, trained.action_half)


def test_run_time_settings_that_differ_from_the_validated_ones_are_reported(
    tmp_path, capsys
) -> None:
    path = _saved(tmp_path)
    cfg = small_cfg(path)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, euler_steps=8))
    P.build(cfg)
    err = capsys.readouterr().err
    assert "euler_steps 8 (checkpoint: 4)" in err


def test_the_shipped_checkpoint_carries_its_contract() -> None:
    """robots/gr1/policy.json: the rate, normalisation and settings the weights were trained
    and validated with (the weights themselves unchanged)."""
    spec, norm, runtime = P.read_contract(CFG.policy.checkpoint)
    assert spec.action_hz == CFG.rates.action_hz and spec.horizon == CFG.policy.chunk_horizon
    assert spec.noise_scale == 0.05
    robot = P.PolicyNorm.for_robot(CFG)
    for a, b in (
        (norm.state.q_mid, robot.state.q_mid),
        (norm.state.q_half, robot.state.q_half),
        (norm.state.dq_scale, robot.state.dq_scale),
        (norm.action_mid, robot.action_mid),
        (norm.action_half, robot.action_half),
    ):
        np.testing.assert_array_equal(a, b)
    assert norm.state.clip == 4.0
    assert runtime.keys() == P.runtime_settings(CFG).keys()
    assert P.unvalidated_settings(CFG, runtime) == {}
