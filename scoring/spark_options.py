"""How ``--engine spark`` runs: the Spark options of a scoring run, parsed from the command line."""
from __future__ import annotations

import os
from dataclasses import dataclass

from contract.errors import UsageError

WRITERS = ("tasks", "spark")
"""Who writes the Parquet: each task, with the local engine's writer ("tasks"), or Spark's
DataFrame writer, one job per table ("spark")."""


@dataclass(frozen=True)
class SparkOptions:
    """Where Spark runs and how."""

    master: str | None = None
    """None: what spark-submit or the environment set, else ``local[*]``."""
    conf: tuple[tuple[str, str], ...] = ()
    ship_bundle: bool = False
    """Send the bundle to every executor (as a zip, ``SparkContext.addArchive``, which unpacks it
    there) instead of reading it from a path they all see."""
    writer: str = "tasks"
    """One of ``WRITERS``."""


def parse_conf(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` pairs of ``--spark-conf``; UsageError for one without '='."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--spark-conf: expected KEY=VALUE, got {pair!r}")
        parsed.append((key.strip(), value))
    return tuple(parsed)


def under_spark_submit() -> bool:
    """Whether this process is a driver that ``spark-submit`` started (it passes the JVM's gateway port)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
