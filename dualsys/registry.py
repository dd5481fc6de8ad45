"""One registry per kind of plug-in (robot drivers, System 2 encoders, ...).

A decorator registers a class by name into one dict; the built-in modules are imported on first
use (their decorators run), and third-party packages add theirs through an entry-point group
(name = registry name, value = the module or class to import).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes of one plug-in kind by name; `register` is the class decorator."""

    def __init__(
        self,
        kind: str,
        base: type,
        builtin_modules: tuple[str, ...],
        entry_point_group: str,
        name_attr: str,
    ) -> None:
        self.kind, self.base, self.builtin = kind, base, builtin_modules
        self.group, self.name_attr = entry_point_group, name_attr
        self._classes: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register a subclass of the base class under `name`."""

        def deco(cls: T) -> T:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{self.kind} {name!r} must be a {self.base.__name__} subclass")
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(
                    f"{self.kind} {name!r} registered twice ({self._classes[name]}, {cls})"
                )
            setattr(cls, self.name_attr, name)
            self._classes[name] = cls
            return cls

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            if ep.name not in self._classes:
                ep.load()

    def names(self) -> list[str]:
        """Every registered name (built-ins and entry-point plug-ins)."""
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered as `name`; KeyError naming the known ones and close matches."""
        self._load()
        if name not in self._classes:
            near = difflib.get_close_matches(name, list(self._classes), n=2)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise KeyError(f"no {self.kind} named {name!r} (known: {self.names()}){hint}")
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
