"""Demonstrations go through the bus codec and round-trip through the on-disk dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dualsys.behaviours.dataset import DatasetReader, DatasetWriter, EpisodeRecorder
from dualsys.behaviours.phrasings import PhrasingsError, load_phrasings, training_phrasings
from dualsys.behaviours.rollout import new_setup, run_expert
from dualsys.bus import DropError, decode
from dualsys.tasks import task_pack


@pytest.fixture(scope="module")
def recorded(cfg, sim, expert):
    out = []
    for i, b in enumerate(("touch_blue_box", "open_close_hands")):
        setup = new_setup(sim, expert, b, f"instruction {i}", seed=i)
        out.append((b, i, *run_expert(sim, expert, cfg, setup, seconds=1.0)))
    return out


def test_frames_are_bus_messages(cfg, recorded):
    b, seed, frames, hands, objs = recorded[0]
    types = [decode(f).TYPE for f in frames]
    assert types[0] == "instruction"
    assert types.count("state") == types.count("command") == 50
    assert types.count("frame") == 10
    bad = bytearray(frames[1])
    bad[-5] ^= 0xFF  # corrupt the payload: the recorder must refuse, not record garbage
    with pytest.raises((DropError, ValueError)):
        EpisodeRecorder(cfg).episode([frames[0], bytes(bad), *frames[2:]], b, seed, hands, objs)


def test_round_trip(cfg, recorded, tmp_path):
    rec = EpisodeRecorder(cfg)
    eps = [rec.episode(f, b, s, h, o) for b, s, f, h, o in recorded]
    w = DatasetWriter(tmp_path, cfg)
    for ep in eps:
        w.add(ep)
    w.close()
    info = json.loads((tmp_path / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_frames"] == 100
    assert (tmp_path / "data" / "chunk-000" / "episode_000001.parquet").is_file()
    r = DatasetReader(tmp_path)
    for i, ep in enumerate(eps):
        back = r.load(i)
        assert back.instruction == ep.instruction and back.behaviour == ep.behaviour
        np.testing.assert_allclose(back.q, ep.q, atol=1e-6)
        np.testing.assert_allclose(back.action, ep.action, atol=1e-6)
        np.testing.assert_array_equal(back.images, ep.images)
        np.testing.assert_array_equal(back.image_index, ep.image_index)
        np.testing.assert_allclose(back.hands, ep.hands, atol=1e-6)
    # the expert really moved, and commands lead states (the action label is the command)
    assert np.abs(eps[1].q[-1] - eps[1].q[0]).max() > 0.1


def test_phrasings_files(cfg, tmp_path):
    train = training_phrasings(cfg)
    assert all(len(v) >= 5 for v in train.values())
    bad = tmp_path / "p.toml"
    bad.write_text('[behaviours]\ndance = ["dance"]\n')
    with pytest.raises(PhrasingsError, match="dance"):
        load_phrasings(bad, task_pack(cfg).behaviours)


def test_eval_phrasings_interleave_training_and_heldout(cfg, tmp_path):
    from dualsys.behaviours.phrasings import eval_phrasings, heldout_phrasings, interleave

    train, held = training_phrasings(cfg), heldout_phrasings(cfg)
    both = eval_phrasings(cfg, None)
    assert set(both) == set(train)
    for b, texts in both.items():
        # 20 episodes cycling through the list: every other one uses a held-out phrasing
        used = [texts[k % len(texts)] for k in range(20)]
        assert sum(t in held[b] for t in used) == 10, b
        assert sum(t in train[b] for t in used) == 10, b
    assert interleave({"a": ["x", "y", "z"]}, {"a": ["1"], "b": ["2"]}) == {
        "a": ["x", "1", "y", "1", "z", "1"],
        "b": ["2"],
    }
    f = tmp_path / "mine.toml"
    f.write_text('[behaviours]\nwave_left_hand = ["flap the left hand"]\n')
    assert eval_phrasings(cfg, str(f)) == {"wave_left_hand": ["flap the left hand"]}
