"""`hf` encoder: a transformers model from a local directory (`system2.model_dir`).

Supported today: dual-tower vision-language models, i.e. any model whose class has
`get_text_features` and `get_image_features` (CLIP, SigLIP, SigLIP2, ALIGN, ... and the user's
own fine-tunes of them). The instruction goes through the text tower (pooled, cached per
instruction), the camera frame through the vision tower (pooled), and the fusion head projects
text + vision + robot state to the latent (weights from `system2.checkpoint`, or the seeded
init under `--untrained`). The model runs on `system2.device` (cpu / cuda).

Generative VLMs that only offer a joint forward (SmolVLM, Qwen-VL, LLaVA, Eagle) are NOT
IMPLEMENTED yet: configure() says so naming the model type, rather than guessing.
Loading is strictly local (`local_files_only`, hub offline); nothing is downloaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from dualsys.system2.encoders import register
from dualsys.system2.encoders.base import Encoder, EncodeResult
from dualsys.system2.encoders.builtin import check_device
from dualsys.system2.fusion import StateFeatures, check_fusion_source, make_fusion
from dualsys.system2.text import offline_hub


def _pooled(out: object) -> torch.Tensor:
    """A (B, D) feature tensor from a tensor or a transformers ModelOutput."""
    if torch.is_tensor(out):
        return out
    pooled = getattr(out, "pooler_output", None)
    if torch.is_tensor(pooled) and pooled.ndim == 2:
        return pooled
    hidden = getattr(out, "last_hidden_state", None)
    if torch.is_tensor(hidden) and hidden.ndim == 3:
        return hidden.mean(dim=1)
    raise TypeError(f"cannot pool a {type(out).__name__} into a feature vector")


class ModelDirError(ValueError):
    """`system2.model_dir` is missing, not a directory, or holds an unsupported model."""


@register("hf")
class HFEncoder(Encoder):
    """A local transformers dual-tower VLM: text and image features + state -> fusion -> latent."""

    def _model_dir(self) -> Path:
        path = self.cfg.system2.model_dir
        if path is None:
            raise ModelDirError(
                f"{self.cfg.path}: system2.model_dir: the hf encoder needs a local transformers "
                "model directory (config.json + weights + tokenizer); none is set"
            )
        if not (path / "config.json").is_file():
            raise ModelDirError(
                f"{self.cfg.path}: system2.model_dir: {path} has no config.json "
                "(expected a directory written by save_pretrained)"
            )
        return path

    def configure(self) -> None:
        """Load the model, tokenizer and image statistics; size the fusion head by a probe."""
        path = self._model_dir()
        check_fusion_source(self.fusion_checkpoint, self.untrained)
        device = check_device(self.cfg.system2.device)
        offline_hub()
        from transformers import AutoModel, AutoTokenizer

        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        mtype = getattr(self.model.config, "model_type", "?")
        if not (
            hasattr(self.model, "get_text_features") and hasattr(self.model, "get_image_features")
        ):
            raise ModelDirError(
                f"{path}: model type {mtype!r} ({type(self.model).__name__}) has no "
                "get_text_features/get_image_features; joint-forward VLMs (SmolVLM, Qwen-VL, "
                "LLaVA) are NOT IMPLEMENTED in the hf encoder yet"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        vcfg = getattr(self.model.config, "vision_config", self.model.config)
        size = getattr(vcfg, "image_size", 224)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        mean, std = self._image_stats(path)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.padding = "max_length" if mtype.startswith("siglip") else False
        tcfg = getattr(self.model.config, "text_config", self.model.config)
        self.max_tokens = min(
            getattr(self.tokenizer, "model_max_length", 512) or 512,
            getattr(tcfg, "max_position_embeddings", 512) or 512,
        )
        self.state = StateFeatures(self.cfg.limits())
        self._cache: dict[str, torch.Tensor] = {}
        cam = self.cfg.cameras[0]
        text_dim = self._text(self.cfg.system2.default_instruction).shape[-1]
        vision_dim = self._image(np.zeros((cam.height, cam.width, 3), np.uint8)).shape[-1]
        head, how = make_fusion(
            self.fusion_checkpoint,
            self.untrained,
            text_dim,
            vision_dim,
            self.state.dim,
            self.latent_dim,
        )
        self.fusion = head.to(self.device)
        self.description = (
            f"hf: {mtype} from {path} on {device} (text {text_dim}-d, vision {vision_dim}-d), "
            f"fusion {how}"
        )

    @staticmethod
    def _image_stats(path: Path) -> tuple[list[float], list[float]]:
        """image_mean / image_std from preprocessor_config.json (0.5 / 0.5 when absent)."""
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            data = json.loads(pre.read_text())
            return data.get("image_mean", [0.5] * 3), data.get("image_std", [0.5] * 3)
        return [0.5] * 3, [0.5] * 3

    @torch.inference_mode()
    def _text(self, text: str) -> torch.Tensor:
        tok = self.tokenizer(
            [text],
            return_tensors="pt",
            truncation=True,
            max_length=self.max_tokens,
            padding=self.padding,
        )
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return _pooled(self.model.get_text_features(**tok))[0].float()

    @torch.inference_mode()
    def _image(self, image: np.ndarray) -> torch.Tensor:
        x = torch.tensor(image, device=self.device).permute(2, 0, 1).unsqueeze(0).float() / 255
        if tuple(x.shape[-2:]) != self.size:
            x = functional.interpolate(x, size=self.size, mode="bilinear", antialias=True)
        x = (x - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        return _pooled(self.model.get_image_features(pixel_values=x.to(dtype)))[0].float()

    @torch.inference_mode()
    def encode(self, image: np.ndarray, q: np.ndarray, dq: np.ndarray, text: str) -> EncodeResult:
        """One step (runs in the service's worker thread)."""
        t0 = time.perf_counter_ns()
        emb = self._cache.get(text)
        cached = emb is not None
        if emb is None:
            emb = self._text(text)
            if len(self._cache) >= 256:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = emb
        t1 = time.perf_counter_ns()
        vis = self._image(image)
        t2 = time.perf_counter_ns()
        s = torch.from_numpy(self.state(q, dq)).to(self.device)
        latent = self.fusion(emb, vis, s).float().cpu().numpy()
        t3 = time.perf_counter_ns()
        return EncodeResult(latent, (t1 - t0) / 1e6, cached, (t2 - t1) / 1e6, (t3 - t2) / 1e6)
