"""The MobileNetV2 definition really carries torchvision's ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image

from dualsys.system2.vision import FEATURE_DIM, MobileNetV2, VisionEncoder, weights_path

MILITARY_UNIFORM = 652  # ImageNet class of torchvision's classic Grace Hopper example


@pytest.fixture(scope="module")
def vision() -> VisionEncoder:
    torch.set_num_threads(1)
    return VisionEncoder("cpu")


def _hopper(size: int) -> np.ndarray:
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB").resize((size, size)))


def test_weights_file_matches_every_parameter() -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(MobileNetV2().state_dict())


def test_pretrained_weights_classify_a_real_photo(vision: VisionEncoder) -> None:
    logits = vision.classify(_hopper(224))
    assert int(logits.argmax()) == MILITARY_UNIFORM
    # A randomly initialised net of the same shape does not (the weights matter).
    torch.manual_seed(0)
    random_net = MobileNetV2().eval()
    with torch.inference_mode():
        rand = random_net(vision.preprocess(_hopper(224)))[0]
    assert int(rand.argmax()) != MILITARY_UNIFORM


def test_features_of_a_camera_frame(vision: VisionEncoder) -> None:
    f = vision.features(_hopper(128))
    assert f.shape == (FEATURE_DIM,) and torch.isfinite(f).all()
    assert (f >= 0).all()  # pooled ReLU6 activations
    g = vision.features(np.zeros((128, 128, 3), np.uint8))
    assert not torch.allclose(f, g)


def test_bad_image_is_a_clear_error(vision: VisionEncoder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        vision.features(np.zeros((128, 128, 3), np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        vision.features(np.zeros((128, 128), np.uint8))
