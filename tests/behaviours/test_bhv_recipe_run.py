"""The shipped GR-1 recipe runs end to end through `dualsys train`, shortened: tiny data from
the scripted expert under every dataset name the recipe uses, a few steps per stage, every
other knob as shipped. The result loads with the policy and fusion loaders."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from dualsys import cli
from dualsys.behaviours.dataset import DatasetWriter, EpisodeRecorder
from dualsys.behaviours.recipe import Recipe, Stage, TrainConfig, dump, load_recipe, recipe_path
from dualsys.behaviours.rollout import new_setup, run_expert
from dualsys.system1.policy import PolicySpec, load_checkpoint
from dualsys.system2.fusion import load_fusion

#: every behaviour the shipped recipe oversamples must be in the data
BEHAVIOURS = ("touch_red_cup", "return_to_rest", "open_close_hands", "raise_both_arms")


def _tiny_data(cfg, sim, expert, data):
    """One 1 s expert episode of each of BEHAVIOURS, as a dataset at `data`."""
    w = DatasetWriter(data, cfg)
    rec = EpisodeRecorder(cfg)
    for i, b in enumerate(BEHAVIOURS):
        setup = new_setup(sim, expert, b, b.replace("_", " "), seed=i)
        frames, hands, objs = run_expert(sim, expert, cfg, setup, seconds=1.0)
        w.add(rec.episode(frames, b, i, hands, objs))
    w.close()


def test_the_shipped_recipe_trains_end_to_end(cfg, sim, expert, tmp_path):
    data = tmp_path / "data" / "tiny"
    _tiny_data(cfg, sim, expert, data)
    shipped = load_recipe(recipe_path(cfg.path))
    names = {d for s in shipped.stages for d in s.data}
    for name in names:  # one tiny dataset under every name the recipe trains on
        (tmp_path / "data" / name).symlink_to(data)
    # shortened: stage i ends at step 2 (i + 1); every other knob as shipped
    short = dataclasses.replace(
        shipped,
        stages=tuple(
            dataclasses.replace(s, train=dataclasses.replace(s.train, steps=2 * (i + 1)))
            for i, s in enumerate(shipped.stages)
        ),
    )
    recipe = tmp_path / "short.toml"
    recipe.write_text(dump(short))
    out = tmp_path / "ck"
    argv = ["train", "--recipe", str(recipe), "--data-root", str(tmp_path / "data")]
    argv += ["--threads", "1"]  # a flag: sets the knob in every stage
    assert cli.main([*argv, "--out", str(out)]) == 0

    short = short.with_knobs({"threads": 1})
    last = short.stages[-1]
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == last.train.steps
    assert state["train"] == dataclasses.asdict(last.train)  # the last stage's knobs
    # every stage ran, in order, resuming the one before; its weights are kept
    for s in short.stages:
        summary = json.loads((out / "stages" / s.name / "summary.json").read_text())
        assert summary["stage"] == s.name and summary["steps"] == s.train.steps
        assert len(summary["data"]) == len(s.data)
        assert ("behaviour_accuracy_train_rows" in summary) == (s.train.aux_behaviour > 0)
        assert (out / "stages" / s.name / "policy.safetensors").is_file()
    # the recipe as run: the shortened one with the flag, datasets as paths under the data root
    ran = load_recipe(out / "recipe.toml")
    assert [s.train for s in ran.stages] == [s.train for s in short.stages]
    assert ran.stages[-1].data == tuple(str(tmp_path / "data" / d) for d in last.data)
    # the checkpoint is what System 1 and System 2 load
    model = load_checkpoint(out / "policy.safetensors", PolicySpec.for_robot(cfg))
    spec = model.spec
    assert (spec.width, spec.layers) == (last.train.width, last.train.layers)
    assert spec.prefix_conditioning and not spec.latent_tokens
    head = load_fusion(out / "fusion.safetensors", 384, 1280, 2 * cfg.n_joints, 512)
    assert head.dims["spatial_k"] == last.train.spatial_k and head.text_side
    # run again: every stage is done, nothing trains
    before = (out / "policy.safetensors").read_bytes()
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert (out / "policy.safetensors").read_bytes() == before


@pytest.mark.parametrize("restart", [True, False])
def test_a_restart_stage_fine_tunes_the_average_with_a_fresh_optimiser(
    cfg, sim, expert, tmp_path, restart
):
    """Stage `b` (restart) begins from stage `a`'s saved average, not its raw weights, with
    a fresh optimiser; without restart it resumes both. Stage b's learning rate is too small
    to move a weight, and it saves its raw weights (ema 0), so what it saves is where it began."""
    data = tmp_path / "tiny"
    _tiny_data(cfg, sim, expert, data)
    base = dict(dataclasses.asdict(TrainConfig()), threads=1, spatial_k=4, prefix_max=2)
    a = Stage("a", (str(data),), TrainConfig(**{**base, "steps": 3, "ema": 0.5, "lr": 1e-2}))
    b_tc = {**base, "steps": 4, "ema": 0.0, "lr": 1e-12, "restart": restart, "warmup": 0}
    b = Stage("b", (str(data),), TrainConfig(**b_tc))
    recipe = tmp_path / "r.toml"
    recipe.write_text(dump(Recipe((a, b))))
    out = tmp_path / "ck"
    assert cli.main(["train", "--recipe", str(recipe), "--out", str(out)]) == 0
    spec = PolicySpec.for_robot(cfg)
    avg = load_checkpoint(out / "stages" / "a" / "policy.safetensors", spec).state_dict()
    began = load_checkpoint(out / "policy.safetensors", spec).state_dict()
    same = all(torch.allclose(avg[k], began[k], atol=1e-6) for k in avg)
    assert same == restart
    moments = load_file(str(out / "train_state.safetensors"))
    steps = {int(v[0]) for k, v in moments.items() if k.endswith("/step")}
    assert steps == ({1} if restart else {4})  # Adam's step count: fresh, or carried on
    assert json.loads((out / "train_state.json").read_text())["step"] == 4
