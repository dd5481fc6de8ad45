"""The instruction's side feature: left and right swapped, content cancelled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualsys.system2.text import SIDE_GAIN, TEXT_DIM, TextEncoder, mirror


def test_mirror_swaps_whole_words_and_keeps_case() -> None:
    assert mirror("wave your right hand") == "wave your left hand"
    assert mirror("Left arm up, right arm down") == "Right arm up, left arm down"
    assert mirror("a bright light on the RIGHT") == "a bright light on the LEFT"
    assert mirror("raise both arms") == "raise both arms"


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    torch.set_num_threads(1)
    return TextEncoder("cpu")


def test_side_feature_names_the_side_not_the_content(text) -> None:
    """Wordings the side was never learnt from still point the same way as the known ones."""
    side = {t: text.embed_sided(t)[0][TEXT_DIM:] for t in (
        "wave your right hand", "wave your left hand", "greet me with the right hand",
        "greet me with the left hand", "raise both arms",
    )}  # fmt: skip
    emb, _, _ = text.embed_sided("wave your right hand")
    assert emb.shape == (2 * TEXT_DIM,) and not emb.flags.writeable
    np.testing.assert_array_equal(emb[:TEXT_DIM], text.embed("wave your right hand")[0])
    assert not side["raise both arms"].any()  # no side named: exactly zero
    np.testing.assert_allclose(side["wave your right hand"], -side["wave your left hand"])
    ref = side["wave your right hand"] / np.linalg.norm(side["wave your right hand"])

    def cos(v: np.ndarray) -> float:
        return float(v @ ref / np.linalg.norm(v))

    assert cos(side["greet me with the right hand"]) > 0.6
    assert cos(side["greet me with the left hand"]) < -0.6
    assert 0.3 * SIDE_GAIN > np.linalg.norm(side["wave your right hand"]) > 0.1 * SIDE_GAIN
    # the plain embeddings of the two greetings are closer than the sides (why it is needed)
    a, b = (text.embed(t)[0] for t in ("greet me with the right hand", "wave your right hand"))
    c = text.embed("greet me with the left hand")[0]
    assert float(a @ c) > float(a @ b)
