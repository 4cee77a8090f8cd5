"""A registry of named objects: the built-in ones, those registered by code, and those installed
packages name in an entry-point group. Model families (``export.models.registry``) and output
tables (``scoring.tables.registry``) are each one."""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of ``kind`` (each with a ``name``) by name: the modules ``built_in`` register theirs
    when first asked, then (once a process) the entry points of ``group``, each naming an
    instance of ``kind``."""

    def __init__(self, what: str, kind: type, built_in: tuple[str, ...], group: str) -> None:
        self.what, self.kind, self.built_in, self.group = what, kind, built_in, group
        self._objects: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, obj: T) -> T:
        """Add ``obj`` (its ``name`` must be new, or the same kind of object registered again)."""
        existing = self._objects.get(obj.name)
        if existing is not None and type(existing) is not type(obj):
            raise ConfigError(f"{self.what} '{obj.name}' is registered already by {type(existing).__module__}")
        self._objects[obj.name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Remove an object (for tests that register their own)."""
        self._objects.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Registered names, the built-in ones first in ``built_in``'s order, then in registration order."""
        self._load()
        first = [module.rsplit(".", 1)[1] for module in self.built_in]
        return tuple(sorted(self._objects, key=lambda n: (n not in first, first.index(n) if n in first else 0)))

    def get(self, name: str) -> T:
        """The object called ``name``; ConfigError naming the registered ones otherwise."""
        self._load()
        try:
            return self._objects[name]
        except KeyError:
            raise ConfigError(f"no {self.what} is named {name!r}; registered: {', '.join(self.names())}") from None

    def _load(self) -> None:
        for module in self.built_in:
            importlib.import_module(module)
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for point in entry_points(group=self.group):
            try:
                obj = point.load()
            except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported alike
                raise ConfigError(f"entry point {point.name} = {point.value!r} ({self.group}): could not be "
                                  f"loaded: {exc}") from None
            if not isinstance(obj, self.kind):
                raise ConfigError(f"entry point {point.name} = {point.value!r} ({self.group}): expected a {self.what} "
                                  f"(a {self.kind.__module__}.{self.kind.__name__} instance), got "
                                  f"{type(obj).__name__}")
            self.register(obj)
