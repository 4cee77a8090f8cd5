"""The registry of output tables: the one list of what a scoring run can write.

The built-in tables register themselves when this module's ``get`` or ``names`` first runs;
another table registers with ``register(MyTable())`` from its own module, or from an installed
package's entry point in the ``recjob.tables`` group (``clicks = "my_tables:CLICKS"``), and every
engine then writes it, checks it, records it, compares it with the previous run and verifies it.
"""
from __future__ import annotations

from contract.errors import UsageError
from contract.registry import Registry

from .base import Table

BUILT_IN = ("scoring.tables.predictions", "scoring.tables.recommendations", "scoring.tables.similar_items")
"""Modules of the tables that ship with the project, in their default order."""
DEFAULT_TABLES = ("predictions", "recommendations")
"""What a run writes when ``--tables`` is not given."""
ENTRY_POINT_GROUP = "recjob.tables"
"""Entry-point group of installed packages' tables: each entry names a ``Table`` instance."""

_TABLES: Registry[Table] = Registry("table", Table, BUILT_IN, ENTRY_POINT_GROUP)

register = _TABLES.register
unregister = _TABLES.unregister
names = _TABLES.names
get = _TABLES.get


def chosen(requested: tuple[str, ...]) -> tuple[Table, ...]:
    """The tables of ``--tables``, in the registry's order; UsageError for an unknown or empty list."""
    known = names()
    unknown = [n for n in requested if n not in known]
    if unknown or not requested:
        raise UsageError(f"--tables: unknown name {unknown or 'none'}; expected a comma-separated subset of "
                         f"{','.join(known)}")
    return tuple(get(n) for n in known if n in requested)


def needs_ratings(requested: tuple[str, ...]) -> bool:
    """Whether any of the tables reads every pair's rating (else the ranking graphs suffice)."""
    return any(get(n).needs_ratings for n in requested)
