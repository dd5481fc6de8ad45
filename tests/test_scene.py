"""The scene file loader: the shipped GR-1 scene loads; hostile files are named by file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dualsys import config
from dualsys.config import ConfigError
from dualsys.scene import EMPTY, load, parse, scene_of

GR1 = config.load_robot("gr1")
SHIPPED = Path(GR1.path).parent / "gr1" / "scene.toml"


def _data() -> dict:
    return tomllib.loads(SHIPPED.read_text())


def test_shipped_scene_loads_with_objects_in_file_order():
    scene = scene_of(GR1)
    assert scene.path == SHIPPED.resolve()
    assert scene.object_names == ("cup", "box")
    assert scene.object("cup").half_height == 0.05 and scene.object("box").half_height == 0.03
    assert scene.table is not None and scene.table.top_z == 0.72
    assert set(scene.cameras) == {c.name for c in GR1.cameras}
    with pytest.raises(KeyError, match="no scene object 'mug'.*cup"):
        scene.object("mug")


def _fails(data: dict, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(Path("/x/scene.toml"), data)
    assert err.value.path == "/x/scene.toml" and err.value.key == key, str(err.value)
    assert reason in err.value.reason, str(err.value)


def test_missing_key_named():
    d = _data()
    del d["objects"]["cup"]["mass"]
    _fails(d, "objects.cup.mass", "missing required key")
    d = _data()
    del d["robot"]
    _fails(d, "robot", "missing required key")


def test_wrong_types_named():
    d = _data()
    d["table"]["top_z"] = "high"
    _fails(d, "table.top_z", "expected a number")
    d = _data()
    d["objects"]["box"]["xy"] = [0.4]
    _fails(d, "objects.box.xy", "list of 2 numbers")
    d = _data()
    d["cameras"]["head"]["pos"] = [0.1, True, 0.0]
    _fails(d, "cameras.head.pos", "finite numbers")
    d = _data()
    d["objects"]["cup"] = 3
    _fails(d, "objects.cup", "expected a table")


def test_negative_or_zero_sizes_named():
    d = _data()
    d["objects"]["cup"]["size"] = [0.035, -0.05]
    _fails(d, "objects.cup.size", "sizes > 0")
    d = _data()
    d["table"]["half_size"] = [0.25, 0.0, 0.02]
    _fails(d, "table.half_size", "sizes > 0")
    d = _data()
    d["objects"]["box"]["mass"] = -1
    _fails(d, "objects.box.mass", "> 0")


def test_unknown_shape_key_and_objects_without_table():
    d = _data()
    d["objects"]["box"]["shape"] = "sphere"
    _fails(d, "objects.box.shape", "expected one of")
    d = _data()
    d["table"]["colour"] = "red"
    _fails(d, "table.colour", "unknown key")
    d = _data()
    del d["table"]
    _fails(d, "objects", "need a [table]")


def test_unreadable_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="<file>: cannot read"):
        load(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[table\n")
    with pytest.raises(ConfigError, match="<toml>: not valid TOML"):
        load(bad)


def test_none_is_the_empty_scene(tmp_path):
    cfg = config.load(GR1.path, overrides=["sim.scene=none"])
    assert scene_of(cfg) is EMPTY and EMPTY.objects == ()


def test_scene_by_name_path_and_unknown_name(tmp_path):
    copy = tmp_path / "copy.toml"
    copy.write_text(GR1.path.read_text())  # a copied config keeps the shipped scene by name
    assert scene_of(config.load(copy)).path == SHIPPED.resolve()
    (tmp_path / "mine.toml").write_text(SHIPPED.read_text())
    own = config.load(copy, overrides=["sim.scene=mine.toml"])
    assert scene_of(own).path == (tmp_path / "mine.toml").resolve()
    with pytest.raises(ConfigError, match=r"sim.scene: no scene named 'gr2'.*did you mean gr1"):
        scene_of(config.load(copy, overrides=["sim.scene=gr2"]))


def test_check_names_the_scene_file_for_a_missing_camera_mount(tmp_path):
    """`dualsys check` builds the model: a camera without a mount is named in the scene file."""
    from dualsys.robot import config_check

    text = SHIPPED.read_text()
    start, end = text.index("[cameras.head]"), text.index("# Palm-centre")
    scene = tmp_path / "scene.toml"
    scene.write_text(text[:start] + text[end:])
    cfg = config.load(GR1.path, overrides=[f"sim.scene={str(scene)!r}"])
    with pytest.raises(ConfigError) as err:
        config_check.check(cfg)
    assert err.value.path == str(scene) and err.value.key == "cameras.head", str(err.value)
    assert "no mount for camera 'head'" in err.value.reason
