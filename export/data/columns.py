"""Which column of a file holds which role (user, item, rating, timestamp; item, title), by name
or by position, with defaults that recognise the usual names."""
from __future__ import annotations

from dataclasses import dataclass, field

from contract.errors import DataError, UsageError

RATING_ROLES = ("user", "item", "rating", "timestamp")
"""Roles of a ratings file's columns by position; the timestamp is optional."""
INTERACTION_ROLES = (*RATING_ROLES, "weight")
"""Roles ``--columns`` may name: a ``weight`` (implicit feedback) is read by name only."""
ITEM_ROLES = ("item", "title")
"""Roles of an items file's columns; the title is optional."""

RECOGNISED: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user_id", "user"),
    "item": ("movieid", "itemid", "item_id", "movie_id", "item"),
    "rating": ("rating",),
    "timestamp": ("timestamp", "ts", "time"),
    "title": ("title", "name"),
    "weight": ("weight",),
}
"""Column names each role takes without a mapping, compared case-insensitively."""

POSITIONS: dict[str, dict[str, int]] = {
    "ratings": {"user": 0, "item": 1, "rating": 2, "timestamp": 3},
    "items": {"item": 0, "title": 1},
}
"""Column of each role in a file without a header (MovieLens' u.data, ratings.dat, u.item, movies.dat)."""


@dataclass(frozen=True)
class ColumnMapping:
    """Columns named (or numbered from 0, for files without a header) per role."""

    roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None, allowed: tuple[str, ...], option: str = "--columns") -> "ColumnMapping":
        """``role=NAME,role=NAME``; UsageError for a malformed pair, an unknown role, a role given
        twice or a column named twice."""
        if not text:
            return cls()
        roles: dict[str, str] = {}
        for pair in (p.strip() for p in text.split(",") if p.strip()):
            role, sep, name = pair.partition("=")
            role, name = role.strip(), name.strip()
            if not sep or not name:
                raise UsageError(f"{option}: expected ROLE=COLUMN pairs separated by commas, got {pair!r}")
            if role not in allowed:
                raise UsageError(f"{option}: unknown role {role!r}; expected some of {', '.join(allowed)}")
            if role in roles:
                raise UsageError(f"{option}: role '{role}' is given twice")
            if name in roles.values():
                raise UsageError(f"{option}: column '{name}' is named twice; each column can hold one role")
            roles[role] = name
        return cls(roles)

    def resolve(self, columns: list[str], has_header: bool, kind: str, required: tuple[str, ...],
                where: str, optional: tuple[str, ...] = ()) -> dict[str, str]:
        """The column of each role found in ``columns`` (the kind's positional roles and
        ``optional`` ones): mapped, else recognised by name (or by position without a header).
        DataError naming the columns found when a required one is missing."""
        found: dict[str, str] = {}
        lower = {c.lower(): c for c in columns}
        for role in (*POSITIONS[kind], *optional):
            name = self.roles.get(role)
            if name is not None:
                if name not in columns:
                    raise DataError(f"{where}: no column '{name}' (mapped to {role}); columns found: "
                                    f"{', '.join(columns)}")
                found[role] = name
            elif has_header:
                match = next((lower[n] for n in RECOGNISED[role]
                              if n in lower and lower[n] not in self.roles.values()), None)
                if match is not None:
                    found[role] = match
            elif role in POSITIONS[kind] and POSITIONS[kind][role] < len(columns):
                found[role] = columns[POSITIONS[kind][role]]
        missing = [r for r in required if r not in found]
        if missing:
            role = missing[0]
            raise DataError(f"{where}: no {role} column; columns found: {', '.join(columns)}; expected one named "
                            f"{' or '.join(RECOGNISED[role])}, or map it with {self.option(kind)} {role}=NAME")
        return found

    def header_names(self, kind: str) -> frozenset[str]:
        """Names whose presence on a first line makes it a header: the mapped and recognised ones."""
        return frozenset(self.roles.values()) | {n for role in POSITIONS[kind] for n in RECOGNISED[role]}

    @staticmethod
    def option(kind: str) -> str:
        return "--columns" if kind == "ratings" else "--item-columns"
