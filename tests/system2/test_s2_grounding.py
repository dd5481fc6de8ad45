"""Grounding an instruction in the phrasings the fusion head was trained on (PhraseBank)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dualsys import config
from dualsys.behaviours.phrasings import load_phrasings
from dualsys.system2.text import FAR_COS, TEXT_DIM, PhraseBank, TextEncoder, ground_for_robot
from dualsys.tasks import task_pack

CFG = config.load_robot("gr1")


def test_bank_blends_by_cosine_and_names_the_nearest() -> None:
    rows = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]], np.float32)
    labels = [("a", "one"), ("a", "two"), ("b", "three")]
    bank = PhraseBank(labels, rows, temperature=0.02)
    x = np.array([0.9, 0.1, 0.0])  # cos 0.99 with row 0, 0.85 with row 1, 0 with row 2
    out, g = bank.ground(x)
    assert (g.behaviour, g.phrase) == ("a", "one") and g.cos == pytest.approx(0.9939, abs=1e-3)
    cos = rows @ (x / np.linalg.norm(x))
    w = np.exp((cos - cos.max()) / 0.02)
    np.testing.assert_allclose(out, (w / w.sum()) @ rows, rtol=1e-5)
    assert out[2] < 1e-9  # the far row gets no weight
    hot = PhraseBank(labels, rows, temperature=100.0).ground(x)[0]
    np.testing.assert_allclose(hot, rows.mean(0), atol=0.005)  # high temperature: plain mean
    assert bank.ground(rows[2])[1].phrase == "three"
    with pytest.raises(ValueError, match="temperature"):
        PhraseBank(labels, rows, temperature=0.0)
    with pytest.raises(ValueError, match="one input row per phrasing"):
        PhraseBank(labels[:2], rows, temperature=0.02)


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    torch.set_num_threads(1)
    enc = TextEncoder("cpu")
    assert ground_for_robot(enc, CFG, sided=True) is not None
    return enc


def test_gr1_grounds_held_out_wordings_in_their_behaviour(text) -> None:
    """Held-out wordings (phrasings_heldout.toml, never trained on) land on their behaviour,
    the side feature keeps left and right apart, and an off-task request is called far."""
    held = load_phrasings(
        CFG.system2.phrasings.parent / "phrasings_heldout.toml", task_pack(CFG).behaviours
    )
    wrong = {
        t: g.behaviour
        for b, ts in held.items()
        for t in ts
        if (g := text.grounding(t)).behaviour != b
    }
    assert not wrong
    sky = text.grounding("reach for the sky with both arms")
    assert sky.behaviour == "raise_both_arms" and 0.5 < sky.cos < 0.8
    assert text.grounding("greet me with the left hand").behaviour == "wave_left_hand"
    assert text.grounding("greet me with the right hand").behaviour == "wave_right_hand"
    far = text.grounding("what is the capital of france")
    assert far.far and far.cos < FAR_COS


def test_head_input_of_a_training_phrasing_stays_its_own(text) -> None:
    own, _, _ = text.embed_sided("raise both arms")
    got, cached, _ = text.head_input("raise both arms", sided=True)
    assert got.shape == (2 * TEXT_DIM,) and not got.flags.writeable and not cached
    cos = float(own @ got / (np.linalg.norm(own) * np.linalg.norm(got)))
    assert cos > 0.97
    assert text.head_input("raise both arms", sided=True)[1]  # cached the second time
    new, _, _ = text.head_input("reach for the sky with both arms", sided=True)
    raw, _, _ = text.embed_sided("reach for the sky with both arms")
    cos_new = float(new @ own / (np.linalg.norm(new) * np.linalg.norm(own)))
    cos_raw = float(raw @ own / (np.linalg.norm(raw) * np.linalg.norm(own)))
    assert cos_new > cos_raw + 0.2  # pulled onto the trained raise wordings
    with pytest.raises(ValueError, match="sided"):
        text.head_input("raise both arms", sided=False)


def test_grounding_off_by_config() -> None:
    enc = TextEncoder.__new__(TextEncoder)  # no model needed: nothing is encoded
    off = dataclasses.replace(CFG.system2, grounding_temperature=0.0)
    assert ground_for_robot(enc, dataclasses.replace(CFG, system2=off), sided=True) is None
    none = dataclasses.replace(CFG.system2, phrasings=None)
    assert ground_for_robot(enc, dataclasses.replace(CFG, system2=none), sided=True) is None
