"""Training recipes: the shipped GR-1 recipe is complete and matches the shipped weights;
every bad value of a recipe file or a flag is refused naming file, key and reason; the
`dualsys train` flags come from TrainConfig and override the recipe."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib

import pytest

from dualsys import cli, config
from dualsys.behaviours.recipe import (
    KNOBS,
    TrainConfig,
    dump,
    load_recipe,
    recipe_path,
)
from dualsys.commands.train import recipe_for

GR1 = config.resolve("gr1")
SHIPPED = recipe_path(GR1)


def _args(*argv: str):
    return cli.build_parser().parse_args(["train", "--out", "unused", *argv])


def test_the_shipped_recipe_is_complete_and_is_the_one_of_the_shipped_weights():
    raw = tomllib.loads(SHIPPED.read_text())
    r = load_recipe(SHIPPED)
    assert [s.name for s in r.stages] == ["ck12b", "ck13", "ck14", "ck15", "ck16", "ck17"]
    assert [s.train.steps for s in r.stages] == [9000, 11000, 13000, 16000, 18500, 20500]
    for i, s in enumerate(r.stages):  # no knob of a stage comes from a code default
        assert set(KNOBS) <= set(raw["train"]) | set(raw["stage"][i]), s.name
        assert s.data[:5] == ("ds1", "ds2", "ds3", "ds4", "ds5") or s.name == "ck17"
    # only the last stage fine-tunes the average of the one before (a fresh optimiser)
    assert [s.train.restart for s in r.stages] == [False] * 5 + [True]
    # the last stage made the shipped weights: its policy shape is the shipped policy.json's
    spec = json.loads((SHIPPED.parent / "policy.json").read_text())
    last = r.stages[-1].train
    assert (last.width, last.layers) == (spec["width"], spec["layers"])
    assert (last.prefix_max > 0) == spec["prefix_conditioning"]
    assert last.latent_tokens == spec["latent_tokens"]
    assert last.noise_scale == spec["noise_scale"] == 0.05  # the sampling the weights run with
    assert last.oversample == "touch_red_cup" and last.prefix_offset == 0.2
    assert last.state_noise == last.fusion_state_noise == 0.03
    assert r.stages[0].train.prefix_offset == 0.15 and r.stages[4].train.prefix_offset == 0.05


def test_dump_reads_back_to_the_same_recipe(tmp_path):
    r = load_recipe(SHIPPED)
    f = tmp_path / "r.toml"
    f.write_text(dump(r))
    assert load_recipe(f).stages == r.stages
    odd = dataclasses.replace(r.stages[0], data=('a "quoted"\\ name', "ü/ds"))
    odd = dataclasses.replace(odd, train=TrainConfig(lr=1e-5, oversample="x,y"))
    f.write_text(dump(dataclasses.replace(r, stages=(odd,))))
    assert load_recipe(f).stages == (odd,)


def _bad_values(name: str) -> list:
    """Values knob `name` must refuse: the wrong types, and just past each bound."""
    kind, f = KNOBS[name]
    if kind is bool:
        return [1, "true", 0.0]
    if kind is str:
        return [1, ["a"], True]
    bad: list = ["1", True, [1]]
    if kind is int:
        bad.append(1.5)
    else:
        bad += [math.inf, -math.inf, math.nan]
    m = f.metadata
    step = 1 if kind is int else 1e-9
    bad += [m["lo"] - step] if "lo" in m else []
    bad += [m["gt"]] if "gt" in m else []
    bad += [m["hi"] + step] if "hi" in m else []
    bad += [m["lt"]] if "lt" in m else []
    return bad


CASES = [(name, v) for name in KNOBS for v in _bad_values(name)]


def _toml(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)


@pytest.mark.parametrize("where", ["train", "stage"])
@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v!r}" for n, v in CASES])
def test_every_bad_knob_value_is_refused_naming_file_and_key(tmp_path, where, name, value):
    f = tmp_path / "r.toml"
    if where == "train":
        f.write_text(f"[train]\n{name} = {_toml(value)}\n")
        key = f"train.{name}"
    else:
        f.write_text(f'[[stage]]\nname = "a"\n{name} = {_toml(value)}\n')
        key = f"stage[0].{name}"
    with pytest.raises(config.ConfigError) as err:
        load_recipe(f)
    assert err.value.path == str(f) and err.value.key == key, err.value
    assert "expected" in err.value.reason


def test_values_on_an_inclusive_bound_load(tmp_path):
    """The refusals above are the bounds: a value on an inclusive bound loads."""
    f = tmp_path / "r.toml"
    for name, (kind, field) in KNOBS.items():
        for bound in ("lo", "hi"):
            if bound in field.metadata:
                value = kind(field.metadata[bound])
                f.write_text(f"[train]\n{name} = {_toml(value)}\n")
                assert getattr(load_recipe(f).stages[0].train, name) == value


BAD_FILES = [
    ("[train\n", "<toml>", "not valid TOML"),
    ("[trian]\nlr = 1e-3\n", "trian", "did you mean 'train'"),
    ("[train]\nprefx_offset = 0.1\n", "train.prefx_offset", "did you mean 'prefix_offset'"),
    ("train = 3\n", "train", "table"),
    ('[stage]\nname = "a"\n', "stage", "[[stage]]"),
    ("stage = []\n", "stage", "[[stage]]"),
    ("[[stage]]\nsteps = 5\n", "stage[0].name", "directory name"),
    ('[[stage]]\nname = "../up"\n', "stage[0].name", "directory name"),
    ('[[stage]]\nname = ""\n', "stage[0].name", "directory name"),
    ('[[stage]]\nname = "a"\ndata = "ds1"\n', "stage[0].data", "list"),
    ('[[stage]]\nname = "a"\ndata = ["ds1", 2]\n', "stage[0].data", "list"),
    ('[[stage]]\nname = "a"\ndata = [""]\n', "stage[0].data", "list"),
    ('[[stage]]\nname = "a"\ndatas = ["x"]\n', "stage[0].datas", "did you mean 'data'"),
    ('[[stage]]\nname = "a"\nsteps = 9\n[[stage]]\nname = "b"\nsteps = 9\n', "stage[1].steps",
     "end step > 9"),
    ('[[stage]]\nname = "a"\nsteps = 9\n[[stage]]\nname = "a"\nsteps = 10\n', "stage[1].name",
     "earlier stage"),
    ("[[stage]]\nname = \"a\"\n[stage.train]\nlr = 1\n", "stage[0].train", "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "reason"), BAD_FILES)
def test_a_bad_recipe_file_is_refused_naming_file_and_key(tmp_path, text, key, reason):
    f = tmp_path / "r.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        load_recipe(f)
    assert err.value.path == str(f) and err.value.key == key, err.value
    assert reason in err.value.reason, err.value


def test_a_missing_or_binary_recipe_file_is_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        load_recipe(tmp_path / "none.toml")
    (tmp_path / "b.toml").write_bytes(b"\xff\xfe\x00[train]")
    with pytest.raises(config.ConfigError, match="cannot read: 'utf-8' codec"):
        load_recipe(tmp_path / "b.toml")
    with pytest.raises(config.ConfigError, match="cannot read: embedded null byte"):
        load_recipe("a\0b.toml")
    with pytest.raises(config.ConfigError, match="cannot read: Is a directory"):
        load_recipe(tmp_path)


def test_help_shows_each_knob_once_with_the_recipe_value(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    options = text.split("knobs:", 1)[1]
    for name in KNOBS:
        flag = "--" + name.replace("_", "-")
        lines = [ln for ln in options.splitlines() if ln.strip().startswith(flag + " ")
                 or ln.strip().startswith(flag + ",")]  # fmt: skip
        assert len(lines) == 1, (flag, lines)
    assert "[gr1 recipe: 128]" in options  # --batch
    assert "ck12b 0.15; ck13-ck16 0.05; ck17 0.2" in " ".join(options.split())  # --prefix-offset


def test_flags_override_the_recipe_in_every_stage():
    shipped = load_recipe(SHIPPED)
    r = recipe_for(GR1, _args("--data-root", "/d", "--prefix-offset", "0.2", "--no-text-side",
                              "--oversample-factor", "3"))  # fmt: skip
    assert [s.train.prefix_offset for s in r.stages] == [0.2] * 6
    assert not any(s.train.text_side for s in r.stages)
    assert [s.train.oversample_factor for s in r.stages] == [3.0] * 6
    for s, before in zip(r.stages, shipped.stages, strict=True):  # the rest is the recipe's
        keep = {"prefix_offset", "text_side", "oversample_factor"}
        assert all(getattr(s.train, k) == getattr(before.train, k) for k in KNOBS if k not in keep)
        assert s.data == tuple(f"/d/{d}" for d in before.data)
    # --data trains every stage on the given datasets
    r = recipe_for(GR1, _args("--data", "/x,/y"))
    assert all(s.data == ("/x", "/y") for s in r.stages)
    # without flags, the recipe as it is
    r = recipe_for(GR1, _args("--data-root", "/d"))
    assert [s.train for s in r.stages] == [s.train for s in shipped.stages]


def test_another_recipe_and_a_robot_without_one(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[train]\nlr = 1e-3\n[[stage]]\nname = "only"\ndata = ["/abs/ds"]\nsteps = 7\n')
    r = recipe_for(GR1, _args("--recipe", str(f), "--batch", "16"))
    (s,) = r.stages
    assert (s.name, s.data, s.train.steps, s.train.lr, s.train.batch) == (
        "only", ("/abs/ds",), 7, 1e-3, 16
    )  # fmt: skip
    assert s.train.prefix_max == TrainConfig().prefix_max  # left out: the dataclass default
    # a robot without a recipe trains with TrainConfig's defaults and needs --data
    r = recipe_for(tmp_path / "robot.toml", _args("--data", "/x", "--steps", "5"))
    assert r.stages[0].train == dataclasses.replace(TrainConfig(), steps=5)
    with pytest.raises(config.ConfigError, match="names no datasets") as err:
        recipe_for(tmp_path / "robot.toml", _args())
    assert err.value.key == "--data"


BAD_FLAGS = [
    (["--data-root", "/d", "--steps", "5"], "--steps", "6 stages"),
    (["--data-root", "/d", "--lr", "-1"], "--lr", "> 0"),
    (["--data-root", "/d", "--lr", "nan"], "--lr", "finite"),
    (["--data-root", "/d", "--ema", "1"], "--ema", "< 1"),
    (["--data-root", "/d", "--batch", "0"], "--batch", ">= 1"),
    (["--data-root", "/d", "--text-swap", "1.5"], "--text-swap", "<= 1"),
    ([], "--data-root", "ds1, ds2"),
]


@pytest.mark.parametrize(("argv", "key", "reason"), BAD_FLAGS)
def test_a_bad_flag_is_refused_naming_it(argv, key, reason):
    with pytest.raises(config.ConfigError) as err:
        recipe_for(GR1, _args(*argv))
    assert err.value.path == "command line" and err.value.key == key, err.value
    assert reason in err.value.reason, err.value


def test_the_command_line_reports_a_bad_recipe_and_exits_2(tmp_path, capsys):
    f = tmp_path / "r.toml"
    f.write_text("[train]\nlr = 0\n")
    out = tmp_path / "ck"
    assert cli.main(["train", "--recipe", str(f), "--data", "x", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{f}: train.lr: expected a number > 0, got 0.0" in err
    assert not out.exists()
    assert cli.main(["train", "--data-root", "/d", "--warmup", "-3", "--out", str(out)]) == 2
    assert "command line: --warmup: expected an integer >= 0, got -3" in capsys.readouterr().err


def test_the_knob_types_are_the_flag_types():
    p = _args("--steps", "12", "--lr", "0.01", "--oversample", "a,b", "--latent-tokens")
    assert (p.steps, p.lr, p.oversample, p.latent_tokens) == (12, 0.01, "a,b", True)
    assert not hasattr(_args(), "lr")  # a flag not given leaves the recipe's value
    with pytest.raises(SystemExit):
        _args("--steps", "1.5")
