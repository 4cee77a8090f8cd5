"""Output tables as objects: each built-in table in a module of its own, and the registry."""
from .base import ITEMS, UNITS, USERS, DriftInputs, ItemSpan, Table, TorchOutputs, UserChunk
from .registry import DEFAULT_TABLES, ENTRY_POINT_GROUP, chosen, get, names, needs_ratings, register, unregister

__all__ = ["DEFAULT_TABLES", "ENTRY_POINT_GROUP", "ITEMS", "UNITS", "USERS", "DriftInputs", "ItemSpan", "Table",
           "TorchOutputs", "UserChunk", "chosen", "get", "names", "needs_ratings", "register", "unregister"]
