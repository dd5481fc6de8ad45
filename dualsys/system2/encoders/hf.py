"""`hf` encoder: a transformers model from a local directory (`system2.model_dir`).

Two kinds of model are supported, told apart by the directory's config.json:

* Joint-forward (generative) VLMs, i.e. any model type transformers maps to
  `AutoModelForImageTextToText` (SmolVLM/Idefics3, LLaVA, Qwen2-VL, PaliGemma, ... and the
  user's own fine-tunes of them). Loaded with `AutoProcessor` + `AutoModelForImageTextToText`.
  The prompt is built with the processor's chat template when it has one (one user turn: the
  image, then the instruction text, plus the generation prompt); without a template it is
  `"{image_token} {instruction}"`. The prompt string is cached per instruction (reported as
  the text time); each step runs the processor on the frame + prompt and ONE forward pass
  (`output_hidden_states=True`, `logits_to_keep=1` where the model takes it, under no_grad;
  no generation) - reported as the vision time. The feature is the last hidden state
  (hidden_states[-1]) mean-pooled over the attention mask, i.e. over every prompt token
  including the image tokens: cheap and the same for every architecture. That one joint
  vector fills both the text and the vision input of the fusion head (so both are the model's
  hidden size), which projects it + the robot state to the latent.
* Dual-tower VLMs, i.e. any other model whose `AutoModel` class has `get_text_features` and
  `get_image_features` (CLIP, SigLIP, SigLIP2, ALIGN, ...). The instruction goes through the
  text tower (pooled, cached per instruction), the camera frame through the vision tower
  (pooled), and the fusion head projects text + vision + robot state to the latent.

Fusion weights come from `system2.checkpoint`, or the seeded init under `--untrained`. The model
runs on `system2.device` (cpu / cuda). A directory holding neither kind (e.g. a text-only
BERT) is refused naming its model type. Loading is strictly local (`local_files_only`, hub
offline); nothing is downloaded.
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


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(1, T, D) hidden states -> (D,) mean over the positions the attention mask keeps."""
    hidden = hidden.float()
    if mask is None:
        return hidden[0].mean(dim=0)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return ((hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0))[0]


class ModelDirError(ValueError):
    """`system2.model_dir` is missing, not a directory, or holds an unsupported model."""


@register("hf")
class HFEncoder(Encoder):
    """A local transformers VLM (joint-forward or dual-tower) + state -> fusion -> latent."""

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
        """Load the model (joint-forward or dual-tower, by its config); size the fusion head."""
        path = self._model_dir()
        check_fusion_source(self.fusion_checkpoint, self.untrained)
        device = check_device(self.cfg.system2.device)
        offline_hub()
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

        self.device = torch.device(device)
        self.state = StateFeatures(self.cfg.limits())
        self._cache: dict[str, object] = {}
        mcfg = AutoConfig.from_pretrained(path, local_files_only=True)
        self.joint = type(mcfg) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
        if self.joint:
            self._load_joint(path)
        else:
            self._load_dual_tower(path)
        mtype = getattr(self.model.config, "model_type", "?")
        cam = self.cfg.cameras[0]
        blank = np.zeros((cam.height, cam.width, 3), np.uint8)
        if self.joint:
            text_dim = vision_dim = self._joint(blank, self._prompt(self.default_text)).shape[-1]
            what = f"joint forward, {text_dim}-d mean-pooled last hidden state"
        else:
            text_dim = self._text(self.default_text).shape[-1]
            vision_dim = self._image(blank).shape[-1]
            what = f"text {text_dim}-d, vision {vision_dim}-d"
        head, how = make_fusion(
            self.fusion_checkpoint,
            self.untrained,
            text_dim,
            vision_dim,
            self.state.dim,
            self.latent_dim,
        )
        self.fusion = head.to(self.device)
        self.state.use(head.state_norm)  # the checkpoint's, when it has one
        self.description = f"hf: {mtype} from {path} on {device} ({what}), fusion {how}"

    @property
    def default_text(self) -> str:
        """The robot config's default instruction (used to probe the feature sizes)."""
        return self.cfg.system2.default_instruction

    def _load_joint(self, path: Path) -> None:
        """AutoProcessor + AutoModelForImageTextToText (a generative VLM, joint forward)."""
        import inspect

        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = (
            AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
            .to(self.device)
            .eval()
        )
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelDirError(
                f"{path}: model type {self.model.config.model_type!r} needs a processor "
                f"(processor_config.json / preprocessor_config.json + tokenizer): {exc}"
            ) from None
        if not callable(getattr(self.processor, "image_processor", None)):
            raise ModelDirError(
                f"{path}: AutoProcessor gave a {type(self.processor).__name__} without an "
                "image processor; a joint-forward VLM needs one (save its processor there)"
            )
        params = inspect.signature(self.model.forward).parameters
        self.forward_extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.dtype = next(self.model.parameters()).dtype

    def _load_dual_tower(self, path: Path) -> None:
        """AutoModel + AutoTokenizer + image statistics (CLIP-like text and vision towers)."""
        from transformers import AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        mtype = getattr(self.model.config, "model_type", "?")
        if not (
            hasattr(self.model, "get_text_features") and hasattr(self.model, "get_image_features")
        ):
            raise ModelDirError(
                f"{path}: model type {mtype!r} ({type(self.model).__name__}) is not a "
                "vision-language model the hf encoder can use: neither an image-text-to-text "
                "model (AutoModelForImageTextToText) nor a dual-tower model with "
                "get_text_features/get_image_features"
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

    def _prompt(self, text: str) -> str:
        """The prompt for one instruction: the chat template with image + text, if any."""
        proc = self.processor
        if getattr(proc, "chat_template", None):
            content = [{"type": "image"}, {"type": "text", "text": text}]
            messages = [{"role": "user", "content": content}]
            return proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{getattr(proc, 'image_token', '<image>')} {text}"

    @torch.inference_mode()
    def _joint(self, image: np.ndarray, prompt: str) -> torch.Tensor:
        """One forward pass on frame + prompt -> (D,) masked mean of the last hidden state."""
        from PIL import Image

        inputs = self.processor(images=[Image.fromarray(image)], text=[prompt], return_tensors="pt")
        batch = {}
        for key, value in inputs.items():
            if torch.is_tensor(value):
                value = value.to(self.device)
                batch[key] = value.to(self.dtype) if value.is_floating_point() else value
        out = self.model(**batch, output_hidden_states=True, **self.forward_extra)
        hidden = getattr(out, "hidden_states", None)
        if not hidden:
            raise TypeError(
                f"{type(self.model).__name__} returned no hidden_states for "
                "output_hidden_states=True; cannot pool a feature vector"
            )
        return _masked_mean(hidden[-1], batch.get("attention_mask"))

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
        """One step (runs in the service's worker thread).

        Dual-tower: text = cached text features, vision = image features. Joint-forward: text =
        the cached prompt, vision = processor + the one forward pass on frame and prompt.
        """
        t0 = time.perf_counter_ns()
        emb = self._cache.get(text)
        cached = emb is not None
        if emb is None:
            emb = self._prompt(text) if self.joint else self._text(text)
            if len(self._cache) >= 256:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = emb
        t1 = time.perf_counter_ns()
        if self.joint:
            vis = self._joint(image, emb)
            emb = vis
        else:
            vis = self._image(image)
        t2 = time.perf_counter_ns()
        s = torch.from_numpy(self.state(q, dq)).to(self.device)
        latent = self.fusion(emb, vis, s, self.fusion.pixels_of(image)).float().cpu().numpy()
        t3 = time.perf_counter_ns()
        return EncodeResult(latent, (t1 - t0) / 1e6, cached, (t2 - t1) / 1e6, (t3 - t2) / 1e6)
