"""The hf back end with tiny randomly initialised models the tests build and save themselves.

A dual-tower CLIP and a joint-forward LLaVA (tiny CLIP vision tower + tiny Llama, with a
word-level tokenizer, a PIL CLIP image processor and a chat template), both written with
save_pretrained to a temp directory and loaded back offline by the encoder.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal

import numpy as np
import pytest
import torch
from s2_helpers import Feeder, StatsListener, start_system2

from dualsys import config
from dualsys.system2 import encoders
from dualsys.system2.encoders.hf import ModelDirError
from dualsys.system2.text import offline_hub

CFG = config.load_robot("gr1")
WORDS = [
    "wave",
    "with",
    "the",
    "right",
    "left",
    "hand",
    "pick",
    "up",
    "red",
    "cup",
    "walk",
    "to",
    "door",
    "stand",
    "still",
]


def _save_tokenizer(path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", model_max_length=16
    )
    fast.save_pretrained(path)


def _tiny_clip(path) -> None:
    offline_hub()
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "vocab_size": 4 + len(WORDS),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=24,
    )
    CLIPModel(cfg).save_pretrained(path)
    _save_tokenizer(path)
    stats = {"image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]}
    (path / "preprocessor_config.json").write_text(json.dumps(stats))


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
)


def _tiny_llava(path, chat_template: str | None = CHAT_TEMPLATE) -> None:
    """A tiny random LLaVA (CLIP vision 32x32/8 + 2-layer Llama) with its processor."""
    offline_hub()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    special = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "user", "assistant", ":"]
    vocab = {w: i for i, w in enumerate([*special, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=128,
        extra_special_tokens={"image_token": "<image>"},
    )
    images = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    LlavaProcessor(
        image_processor=images,
        tokenizer=fast,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=chat_template,
        num_additional_image_tokens=1,
    ).save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        image_token_id=vocab["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(cfg).save_pretrained(path)


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llava")
    _tiny_llava(path)
    return path


def _hf_toml(model_dir, tmp_path):
    """A copy of robots/gr1.toml with `encoder = "hf"` and `model_dir` pointing at the model."""
    text, n = re.subn(
        r'encoder = "builtin"[^\n]*',
        f'encoder = "hf"\nmodel_dir = "{model_dir}"',
        CFG.path.read_text(),
    )
    assert n == 1
    toml = tmp_path / "gr1_hf.toml"
    toml.write_text(text)
    return toml


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_clip")
    _tiny_clip(path)
    return path


def _cfg(model_dir):
    return dataclasses.replace(CFG, system2=dataclasses.replace(CFG.system2, model_dir=model_dir))


def test_hf_encoder_loads_and_gives_latents_of_the_right_size(model_dir) -> None:
    torch.set_num_threads(1)
    enc = encoders.create(_cfg(model_dir), untrained=True, name="hf")
    enc.configure()
    assert "clip" in enc.description and "text 24-d, vision 24-d" in enc.description
    img = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    q = CFG.limits()["default"]
    dq = np.zeros_like(q)
    a = enc.encode(img, q, dq, "wave with the right hand")
    b = enc.encode(img, q, dq, "wave with the right hand")
    c = enc.encode(img, q, dq, "pick up red cup")
    assert a.vector.shape == (CFG.system2.latent_dim,) and np.isfinite(a.vector).all()
    assert not a.text_cached and b.text_cached
    assert np.array_equal(a.vector, b.vector)
    assert not np.allclose(a.vector, c.vector)


def test_hf_joint_forward_vlm_from_a_robot_config(llava_dir, tmp_path) -> None:
    """A LLaVA named in a robot TOML: one forward, pooled, fused -> latents of the right size."""
    torch.set_num_threads(1)
    cfg = config.load_robot(str(_hf_toml(llava_dir, tmp_path)))
    assert cfg.system2.encoder == "hf" and cfg.system2.model_dir == llava_dir
    enc = encoders.create(cfg, untrained=True)
    enc.configure()
    assert enc.joint and enc.forward_extra == {"logits_to_keep": 1}
    assert "llava" in enc.description and "48-d mean-pooled" in enc.description
    assert enc._prompt("wave with the right hand") == (
        "user : <image> wave with the right hand assistant : "
    )
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    q = CFG.limits()["default"]
    dq = np.zeros_like(q)
    a = enc.encode(img, q, dq, "wave with the right hand")
    b = enc.encode(img.copy(), q.copy(), dq.copy(), "wave with the right hand")
    c = enc.encode(img, q, dq, "pick up the red cup")
    d = enc.encode(rng.integers(0, 256, img.shape, dtype=np.uint8), q, dq, "pick up the red cup")
    assert a.vector.shape == (cfg.system2.latent_dim,) and np.isfinite(a.vector).all()
    assert not a.text_cached and b.text_cached
    assert np.array_equal(a.vector, b.vector)
    assert np.abs(a.vector - c.vector).max() > 1e-2, "instruction did not change the latent"
    assert np.abs(c.vector - d.vector).max() > 1e-3, "image did not change the latent"


def test_hf_joint_pooling_is_the_masked_mean_of_the_last_hidden_state(llava_dir) -> None:
    """The feature is hidden_states[-1] averaged over the prompt, checked against the model."""
    from PIL import Image

    enc = encoders.create(_cfg(llava_dir), untrained=True, name="hf")
    enc.configure()
    img = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    prompt = enc._prompt("walk to the door")
    got = enc._joint(img, prompt)
    x = enc.processor(images=[Image.fromarray(img)], text=[prompt], return_tensors="pt")
    n_image = int((x["input_ids"] == enc.model.config.image_token_id).sum())
    assert n_image == 16, "the prompt should carry the 4x4 image patches"
    with torch.no_grad():
        hidden = enc.model(**x, output_hidden_states=True).hidden_states[-1][0]
    assert got.shape == (48,)
    torch.testing.assert_close(got, hidden.mean(dim=0))


def test_hf_joint_without_chat_template_puts_the_image_token_first(tmp_path) -> None:
    _tiny_llava(tmp_path, chat_template=None)
    enc = encoders.create(_cfg(tmp_path), untrained=True, name="hf")
    enc.configure()
    assert enc._prompt("stand still") == "<image> stand still"
    q = CFG.limits()["default"]
    out = enc.encode(np.zeros((64, 64, 3), np.uint8), q, np.zeros_like(q), "stand still")
    assert out.vector.shape == (CFG.system2.latent_dim,)


def test_hf_without_model_dir_is_a_clear_error() -> None:
    with pytest.raises(ModelDirError, match="model_dir"):
        encoders.create(CFG, untrained=True, name="hf").configure()


def test_hf_refuses_a_directory_without_a_model(tmp_path) -> None:
    with pytest.raises(ModelDirError, match="no config.json"):
        encoders.create(_cfg(tmp_path), untrained=True, name="hf").configure()


def test_hf_refuses_a_model_that_is_not_vision_language(tmp_path) -> None:
    offline_hub()
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=32,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(ModelDirError, match="'bert'.*not a vision-language model"):
        encoders.create(_cfg(tmp_path), untrained=True, name="hf").configure()


@pytest.mark.slow
def test_service_runs_the_hf_encoder_named_in_a_robot_config(model_dir, tmp_path) -> None:
    """`system2.encoder = "hf"` + `model_dir` in a robot TOML, through `dualsys system2`."""
    import zmq

    from dualsys.bus import Latent, Subscriber

    toml = _hf_toml(model_dir, tmp_path)
    run = tmp_path / "run"
    feeder = Feeder(CFG, run).start()
    ctx = zmq.Context()
    listener = StatsListener(ctx, CFG, run)
    latents = Subscriber(ctx, CFG.endpoint("latent", run), (Latent,), latest=True)
    proc = start_system2(run, "--robot", str(toml), "--untrained")
    try:
        assert listener.wait_hello(60) is not None, "no Hello from system2 (hf)"
        msg = latents.recv(3000)
        assert msg is not None and msg.vector.shape == (CFG.system2.latent_dim,)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        ctx.destroy(linger=0)
        feeder.close()
    assert proc.returncode == 0, out
    summary = json.loads((run / "system2.json").read_text())
    assert summary["encoder"].startswith("hf: clip") and summary["steps"] >= 1


def test_masked_mean_ignores_padded_positions() -> None:
    from dualsys.system2.encoders.hf import _masked_mean

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(_masked_mean(hidden, mask), torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(_masked_mean(hidden, None), hidden[0].mean(dim=0))
