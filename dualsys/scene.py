"""A robot's scene as data: where it stands, its camera mounts and palm sites, table and objects.

One TOML file per robot, named by `[sim] scene` in the robot config: a path ending in ".toml"
(relative to the config file), the name of a shipped robot's scene ("gr1" =
`robots/gr1/scene.toml`, so a copy of a shipped config elsewhere keeps its scene), or "none".
The simulation builds the world from it (`dualsys.robot.model`) and a task pack reads object
sizes and heights from it, so neither repeats a number. Loading validates every key and names
file, key and reason on any error (`ConfigError`); unknown keys are errors. A scene without
`[table]` has no table and no objects.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualsys.config import ROBOTS_DIR, ConfigError, RobotConfig, _Table, read_toml

#: Object shapes and what `size` holds for each (all half extents, metres).
SHAPES = {"cylinder": ("radius", "half_height"), "box": ("half_x", "half_y", "half_z")}


@dataclass(frozen=True)
class Mount:
    """A camera on a body: position in the body frame, camera x and y axes (MuJoCo `xyaxes`;
    the camera looks along its -z)."""

    body: str
    pos: tuple[float, float, float]
    xyaxes: tuple[float, ...]


@dataclass(frozen=True)
class HandSite:
    """A palm-centre site on a link (`offset` in the link's frame) and the body whose origin is
    that hand's fingertip (what touches are measured with)."""

    link: str
    offset: tuple[float, float, float]
    tip: str


@dataclass(frozen=True)
class Table:
    """A box table: centre (x, y) on the floor, half extents of its top, height of the top."""

    center: tuple[float, float]
    half_size: tuple[float, float, float]
    top_z: float


@dataclass(frozen=True)
class SceneObject:
    """A free object standing on the table at its nominal (x, y)."""

    name: str
    shape: str
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float]
    mass: float
    xy: tuple[float, float]

    @property
    def half_height(self) -> float:
        """Height of the object's centre above the surface it stands on."""
        return self.size[1] if self.shape == "cylinder" else self.size[2]


@dataclass(frozen=True)
class Scene:
    """Everything the simulation places around the robot (see the module docstring)."""

    path: Path | None
    base_height: float
    cameras: dict[str, Mount]
    hand_sites: dict[str, HandSite]
    table: Table | None
    objects: tuple[SceneObject, ...]
    spread: float
    min_gap: float

    @property
    def object_names(self) -> tuple[str, ...]:
        """Object names in file order (the order of every objects array)."""
        return tuple(o.name for o in self.objects)

    def object(self, name: str) -> SceneObject:
        """The object called `name`; KeyError naming the known ones."""
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no scene object {name!r} (objects: {list(self.object_names)})")


#: The scene of `[sim] scene = "none"`: no table, no objects, no mounts.
EMPTY = Scene(None, 0.95, {}, {}, None, (), 0.0, 0.0)


def _vec(t: _Table, name: str, n: int, positive: bool = False) -> tuple[float, ...]:
    """A list of exactly n finite numbers (each > 0 when `positive`)."""
    value = t.raw(name)
    if not isinstance(value, list) or len(value) != n:
        raise ConfigError(t.path, t.key(name), f"expected a list of {n} numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(t.path, t.key(name), f"expected finite numbers, got {v!r}")
        if positive and v <= 0:
            raise ConfigError(t.path, t.key(name), f"expected sizes > 0, got {v!r}")
        out.append(float(v))
    return tuple(out)


def _object(t: _Table, name: str) -> SceneObject:
    shape = t.str("shape")
    if shape not in SHAPES:
        raise ConfigError(
            t.path, t.key("shape"), f"expected one of {sorted(SHAPES)}, got {shape!r}"
        )
    size = _vec(t, "size", len(SHAPES[shape]), positive=True)
    rgba = _vec(t, "rgba", 4)
    obj = SceneObject(name, shape, size, rgba, t.float("mass", positive=True), _vec(t, "xy", 2))  # type: ignore[arg-type]
    t.done()
    return obj


def parse(path: Path, data: dict[str, Any]) -> Scene:
    """Validate a parsed scene file (`path` only names it in errors)."""
    doc = _Table(path, "", data)
    robot = doc.table("robot")
    base_height = robot.float("base_height", positive=True)
    robot.done()
    cams = doc.table("cameras") if "cameras" in data else _Table(path, "cameras", {})
    cameras = {}
    for name in list(cams.data):
        c = cams.table(name)
        cameras[name] = Mount(c.str("body"), _vec(c, "pos", 3), _vec(c, "xyaxes", 6))  # type: ignore[arg-type]
        c.done()
    hs = doc.table("hand_sites") if "hand_sites" in data else _Table(path, "hand_sites", {})
    hand_sites = {}
    for name in list(hs.data):
        h = hs.table(name)
        hand_sites[name] = HandSite(h.str("link"), _vec(h, "offset", 3), h.str("tip"))  # type: ignore[arg-type]
        h.done()
    table, objects, spread, min_gap = None, [], 0.0, 0.0
    if "table" in data:
        tt = doc.table("table")
        table = Table(
            _vec(tt, "center", 2),  # type: ignore[arg-type]
            _vec(tt, "half_size", 3, positive=True),  # type: ignore[arg-type]
            tt.float("top_z", positive=True),
        )
        spread = tt.float("spread", lo=0.0)
        min_gap = tt.float("min_gap", lo=0.0)
        tt.done()
        ot = doc.table("objects")
        objects = [_object(ot.table(name), name) for name in list(ot.data)]
    elif "objects" in data:
        raise ConfigError(path, "objects", "objects need a [table] to stand on")
    doc.done()
    return Scene(path, base_height, cameras, hand_sites, table, tuple(objects), spread, min_gap)


@functools.lru_cache(maxsize=8)
def load(path: Path) -> Scene:
    """Load and validate one scene file (cached per path). Raises ConfigError."""
    return parse(path, read_toml(path))


def scene_path(cfg: RobotConfig) -> Path | None:
    """The file `cfg`'s `[sim] scene` names (module docstring), None for "none".

    An unknown scene name is a ConfigError listing the shipped ones and close matches."""
    value = cfg.sim.scene
    if value == "none":
        return None
    if value.endswith(".toml"):
        return (cfg.path.parent / value).resolve()
    shipped = {p.parent.name: p for p in sorted(ROBOTS_DIR.glob("*/scene.toml"))}
    if value not in shipped:
        near = difflib.get_close_matches(value, list(shipped), n=2)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(
            cfg.path, "sim.scene", f"no scene named {value!r} (shipped: {sorted(shipped)}){hint}"
        )
    return shipped[value].resolve()


def scene_of(cfg: RobotConfig) -> Scene:
    """The scene `cfg`'s `[sim] scene` names (loaded once per file), or EMPTY for "none"."""
    path = scene_path(cfg)
    return EMPTY if path is None else load(path)
