"""The registry of model families: the one list of what can be trained, exported and scored.

The built-in families register themselves when this module is imported; another family
registers with ``register(MyFamily())`` from its own module, or from an installed package's
entry point in the ``recjob.families`` group (``bias = "bias_plugin:FAMILY"``), and every
command then trains, exports, checks, scores, verifies and reports it.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from contract.errors import ConfigError

from .base import Family

_FAMILIES: dict[str, Family] = {}

BUILT_IN = ("export.models.mf", "export.models.dense", "export.models.lstm", "export.models.item_ae")
"""Modules of the families that ship with the project, in their default order."""

ENTRY_POINT_GROUP = "recjob.families"
"""Entry-point group of installed packages' families: each entry names a ``Family`` instance."""

_entry_points_loaded = False


def register(family: Family) -> Family:
    """Add ``family`` (its ``name`` must be new, or the same family registered again)."""
    existing = _FAMILIES.get(family.name)
    if existing is not None and type(existing) is not type(family):
        raise ConfigError(f"model family '{family.name}' is registered already by {type(existing).__module__}")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (for tests that register their own)."""
    _FAMILIES.pop(name, None)


def names() -> tuple[str, ...]:
    """Registered family names, built-in ones first, in registration order."""
    _load_built_in()
    built_in = [m.rsplit(".", 1)[1] for m in BUILT_IN]
    return tuple(sorted(_FAMILIES, key=lambda n: (n not in built_in, built_in.index(n) if n in built_in else 0)))


def get(name: str) -> Family:
    """The family called ``name``; ConfigError naming the registered ones otherwise."""
    _load_built_in()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ConfigError(f"no model family is named {name!r}; registered: {', '.join(names())}") from None


def registered() -> tuple[Family, ...]:
    """Every registered family, for worker processes to register in turn."""
    return tuple(get(name) for name in names())


def _load_built_in() -> None:
    """The built-in families, then (once a process) those of installed packages' entry points."""
    global _entry_points_loaded
    for module in BUILT_IN:
        importlib.import_module(module)
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            family = point.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported alike
            raise ConfigError(f"entry point {point.name} = {point.value!r} ({ENTRY_POINT_GROUP}): could not be "
                              f"loaded: {exc}") from None
        if not isinstance(family, Family):
            raise ConfigError(f"entry point {point.name} = {point.value!r} ({ENTRY_POINT_GROUP}): expected a model "
                              f"family (an export.models.base.Family instance), got {type(family).__name__}")
        register(family)
