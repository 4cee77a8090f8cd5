"""The registry of model families: the one list of what can be trained, exported and scored.

The built-in families register themselves when this module is imported; another family
registers with ``register(MyFamily())`` from its own module, and every command then trains,
exports, checks, scores, verifies and reports it.
"""
from __future__ import annotations

import importlib

from contract.errors import ConfigError

from .base import Family

_FAMILIES: dict[str, Family] = {}

BUILT_IN = ("export.models.mf", "export.models.dense", "export.models.lstm", "export.models.item_ae")
"""Modules of the families that ship with the project, in their default order."""


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
    for module in BUILT_IN:
        importlib.import_module(module)
