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

from dualsys.config import RobotConfig
from dualsys.registry import Registry
from dualsys.system2.encoders.base import BatchResult, Encoder, EncodeResult

ENTRY_POINT_GROUP = "dualsys.encoders"
_REGISTRY: Registry[type[Encoder]] = Registry(
    "System 2 encoder",
    Encoder,
    ("dualsys.system2.encoders.builtin", "dualsys.system2.encoders.hf"),
    ENTRY_POINT_GROUP,
    "name",
)
register = _REGISTRY.register
available = _REGISTRY.names
get = _REGISTRY.get


def create(cfg: RobotConfig, *, untrained: bool = False, name: str | None = None) -> Encoder:
    """Instantiate (not yet configure) the encoder the robot config names (or `name`)."""
    return get(name or cfg.system2.encoder)(cfg, untrained=untrained)


__all__ = ["BatchResult", "EncodeResult", "Encoder", "available", "create", "get", "register"]
