"""A robot's behaviour vocabulary is data (dualsys/vocabulary.py): the runtime reads any
behaviour names a phrasings file gives; the learning wing adds the check against its expert."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualsys import config
from dualsys.vocabulary import PhrasingsError, read_phrasings


def test_the_shipped_training_phrasings_are_the_system2_vocabulary() -> None:
    cfg = config.load_robot("gr1")
    vocab = read_phrasings(cfg.system2.phrasings)
    assert "touch_red_cup" in vocab and "touch the red cup" in vocab["touch_red_cup"]


def test_a_new_behaviour_needs_no_code_on_the_runtime_side(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[behaviours]\ndance = [" do a little dance ", "dance"]\n')
    assert read_phrasings(path) == {"dance": ["do a little dance", "dance"]}
    with pytest.raises(PhrasingsError, match=r"behaviours\.dance: unknown behaviour"):
        read_phrasings(path, known=("wave",))
    with pytest.raises(PhrasingsError, match="behaviours missing: wave"):
        read_phrasings(path, known=("dance", "wave"), require_all=True)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("[behaviours]\ndance = []\n", "behaviours.dance: expected a non-empty list of strings"),
        ("[behaviours]\ndance = [1]\n", "behaviours.dance: expected a non-empty list of strings"),
        ("dance = ['x']\n", "expected a [behaviours] table"),
        ("[behaviours\n", "not valid TOML"),
    ],
)
def test_a_bad_file_names_itself_and_the_key(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PhrasingsError) as info:
        read_phrasings(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    with pytest.raises(PhrasingsError, match="not found"):
        read_phrasings(tmp_path / "none.toml")
