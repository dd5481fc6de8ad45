"""The hf back end with a tiny randomly initialised CLIP the test builds and saves itself."""

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


def test_hf_without_model_dir_is_a_clear_error() -> None:
    with pytest.raises(ModelDirError, match="model_dir"):
        encoders.create(CFG, untrained=True, name="hf").configure()


def test_hf_refuses_a_directory_without_a_model(tmp_path) -> None:
    with pytest.raises(ModelDirError, match="no config.json"):
        encoders.create(_cfg(tmp_path), untrained=True, name="hf").configure()


def test_hf_says_joint_forward_models_are_not_implemented(tmp_path) -> None:
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
    with pytest.raises(ModelDirError, match="NOT IMPLEMENTED"):
        encoders.create(_cfg(tmp_path), untrained=True, name="hf").configure()


@pytest.mark.slow
def test_service_runs_the_hf_encoder_named_in_a_robot_config(model_dir, tmp_path) -> None:
    """`system2.encoder = "hf"` + `model_dir` in a robot TOML, through `dualsys system2`."""
    import zmq

    from dualsys.bus import Latent, Subscriber

    text = CFG.path.read_text()
    text, n = re.subn(
        r'encoder = "builtin"[^\n]*', f'encoder = "hf"\nmodel_dir = "{model_dir}"', text
    )
    assert n == 1
    toml = tmp_path / "gr1_hf.toml"
    toml.write_text(text)
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
