"""The scene's ground truth on its own declared link (issue 20.4): SceneTruth on `scene_truth`
of `[endpoints]`, with the topic's receive limits; the codec drops a hostile one with its
reason. (Before, the truth travelled as Stats(process="scene") through the supervisor, and the
reset on an undeclared `{run}/scene.sock`.) The evaluator's receiver on real sockets:
tests/behaviours/test_bhv_scene_watch.py."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from dualsys import config
from dualsys.bus import SceneReset, SceneTruth
from dualsys.bus.codec import DropError, decode, encode
from dualsys.bus.limits import receive_spec
from dualsys.bus.messages import MAX_SCENE_NAME_CHARS, MAX_SCENE_ROWS
from dualsys.bus.roles import LINKS

CFG = config.load_robot("gr1")
SPEC = receive_spec(CFG, "scene_truth")


def truth(**kw) -> SceneTruth:
    """A valid SceneTruth for episode 3 (cup and box on the table, both hands), with `kw`."""
    fields = {
        "episode": 3,
        "sim_time": 1.5,
        "objects": np.array([[0.38, -0.16, 0.76], [0.40, 0.16, 0.75]]),
        "object_names": "cup,box",
        "hands": np.array([[0.2, 0.25, 0.9], [0.2, -0.25, 0.9]]),
        "hand_names": "left_hand,right_hand",
    }
    return SceneTruth(**{**fields, **kw})


def _bytes(msg) -> bytes:
    return encode(msg, 1, "robot", 123)


def _body(**body) -> bytes:
    """A hand-made envelope (what encode would refuse to write)."""
    return msgpack.packb(["scene_truth", 1, 1, 1, 1, "robot", body])


#: case -> (bytes on the scene_truth link, the reason the receiver drops it for)
HOSTILE = {
    "garbage": (b"\x00\xffnot msgpack", "malformed"),
    "wrong-type": (_bytes(SceneReset(seed=1, episode=3)), "wrong_type"),
    "missing-field": (_body(episode=3, sim_time=1.0), "bad_field"),
    "rows-of-4": (_bytes(truth(objects=np.zeros((2, 4)))), "wrong_shape"),
    "flat-array": (_bytes(truth(objects=np.zeros(6))), "wrong_shape"),
    "nan-position": (_bytes(truth(hands=np.array([[0.0, np.nan, 0.0], [0, 0, 0]]))), "nonfinite"),
    "int-positions": (_bytes(truth(objects=np.zeros((2, 3), np.int64))), "bad_field"),
    "names-for-1-row-of-2": (_bytes(truth(object_names="cup")), "out_of_range"),
    "duplicate-names": (_bytes(truth(object_names="cup,cup")), "out_of_range"),
    "empty-name": (_bytes(truth(hand_names="left_hand,")), "out_of_range"),
    "too-many-rows": (
        _bytes(
            truth(
                objects=np.zeros((MAX_SCENE_ROWS + 1, 3)),
                object_names=",".join(f"o{i}" for i in range(MAX_SCENE_ROWS + 1)),
                hands=np.zeros((0, 3)),
                hand_names="",
            )
        ),
        "oversized",  # its array is longer than the topic's limits allow
    ),
    "negative-sim-time": (_bytes(truth(sim_time=-1.0)), "out_of_range"),
    "negative-episode": (_bytes(truth(episode=-1)), "out_of_range"),
    "over-max-bytes": (_bytes(truth(objects=np.zeros((4096, 3)))), "oversized"),
}


def test_the_scene_links_are_declared_in_the_config() -> None:
    for name in ("scene_reset", "scene_truth"):
        assert name in config.ENDPOINT_NAMES and name in LINKS
        assert CFG.endpoint(name, "/run") == f"ipc:///run/{name}.sock"


def test_a_config_may_leave_the_scene_links_out_but_not_get_them_wrong(tmp_path: Path) -> None:
    """A hardware robot's config need not name the simulation's links; a named one is checked
    like every link."""
    text = (config.ROBOTS_DIR / "gr1.toml").read_text()
    kept = [line for line in text.splitlines() if not line.startswith("scene_")]
    path = tmp_path / "robot.toml"
    path.write_text("\n".join(kept))
    cfg = config.load(path)
    assert {n: cfg.endpoints[n] for n in config.SIM_ENDPOINTS} == config.SIM_ENDPOINTS
    path.write_text(text.replace('scene_truth = "ipc:', 'scene_truth = "udp:'))
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert info.value.key == "endpoints.scene_truth"


def test_the_largest_valid_scene_truth_fits_its_limits() -> None:
    names = ",".join(f"{i:0{MAX_SCENE_NAME_CHARS}d}" for i in range(MAX_SCENE_ROWS))
    rows = np.zeros((MAX_SCENE_ROWS, 3))
    big = truth(objects=rows, object_names=names, hands=rows, hand_names=names)
    got = decode(encode(big, 2**63 - 1, "\U0001f600" * 128, 2**63 - 1), **SPEC)
    assert got.named_objects().keys() == set(names.split(","))
    assert SPEC["limits"].max_bytes < 8 * 1024  # a few KiB, not the 8 MiB default


def test_a_valid_scene_truth_names_its_rows() -> None:
    got = decode(_bytes(truth()), (SceneTruth,), **SPEC)
    assert got.episode == 3 and got.sim_time == 1.5
    np.testing.assert_array_equal(got.named_objects()["box"], [0.40, 0.16, 0.75])
    np.testing.assert_array_equal(got.named_hands()["right_hand"], [0.2, -0.25, 0.9])


def test_more_rows_than_a_scene_names_are_refused_without_topic_limits() -> None:
    """A receiver with only the default limits still refuses an over-long scene."""
    rows = MAX_SCENE_ROWS + 1
    names = ",".join(f"o{i}" for i in range(rows))
    with pytest.raises(DropError) as info:
        decode(_bytes(truth(objects=np.zeros((rows, 3)), object_names=names)), (SceneTruth,))
    assert info.value.reason == "out_of_range" and "objects" in info.value.detail


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_scene_truth_is_dropped_with_its_reason(case: str) -> None:
    data, reason = HOSTILE[case]
    with pytest.raises(DropError) as info:
        decode(data, (SceneTruth,), **SPEC)
    assert info.value.reason == reason, info.value
