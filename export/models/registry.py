"""The registry of model families: the one list of what can be trained, exported and scored.

The built-in families register themselves when this module is imported; another family
registers with ``register(MyFamily())`` from its own module, or from an installed package's
entry point in the ``recjob.families`` group (``bias = "bias_plugin:FAMILY"``), and every
command then trains, exports, checks, scores, verifies and reports it.
"""
from __future__ import annotations

from contract.registry import Registry

from .base import Family

BUILT_IN = ("export.models.mf", "export.models.dense", "export.models.lstm", "export.models.item_ae")
"""Modules of the families that ship with the project, in their default order."""

ENTRY_POINT_GROUP = "recjob.families"
"""Entry-point group of installed packages' families: each entry names a ``Family`` instance."""

_FAMILIES: Registry[Family] = Registry("model family", Family, BUILT_IN, ENTRY_POINT_GROUP)

register = _FAMILIES.register
unregister = _FAMILIES.unregister
names = _FAMILIES.names
get = _FAMILIES.get


def registered() -> tuple[Family, ...]:
    """Every registered family, for worker processes to register in turn."""
    return tuple(get(name) for name in names())
