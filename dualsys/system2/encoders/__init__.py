"""The System 2 encoder registry: one dict of encoder classes by name.

Register with the decorator::

    @register("mine")
    class MyEncoder(Encoder): ...

The robot config picks one with `system2.encoder = "mine"`. Third-party packages add theirs
through the entry-point group `dualsys.encoders` (name = registry name, value = the module or
class to import; importing it runs the decorator). The builtin and hf back ends register
themselves when this registry is first asked for an encoder.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from dualsys.config import RobotConfig
from dualsys.system2.encoders.base import Encoder, EncodeResult

ENTRY_POINT_GROUP = "dualsys.encoders"
_REGISTRY: dict[str, type[Encoder]] = {}
_BUILTIN_MODULES = ("dualsys.system2.encoders.builtin", "dualsys.system2.encoders.hf")
_loaded = False


def register(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator: register an Encoder subclass under `name`."""

    def deco(cls: type[Encoder]) -> type[Encoder]:
        if not (isinstance(cls, type) and issubclass(cls, Encoder)):
            raise TypeError(f"@register({name!r}) must decorate an Encoder subclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"encoder name {name!r} is already registered by {_REGISTRY[name]}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def available() -> list[str]:
    """Names of every registered encoder (builtin ones and entry-point plug-ins)."""
    _load_plugins()
    return sorted(_REGISTRY)


def get(name: str) -> type[Encoder]:
    """The encoder class registered as `name`; KeyError with close matches otherwise."""
    _load_plugins()
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, list(_REGISTRY), n=2)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise KeyError(f"no System 2 encoder named {name!r} (known: {available()}){hint}")
    return _REGISTRY[name]


def create(cfg: RobotConfig, *, untrained: bool = False, name: str | None = None) -> Encoder:
    """Instantiate (not yet configure) the encoder the robot config names (or `name`)."""
    return get(name or cfg.system2.encoder)(cfg, untrained=untrained)


__all__ = ["EncodeResult", "Encoder", "available", "create", "get", "register"]
