"""One log line at least every ``EVERY_S`` seconds from a long step, so that a scheduler's log
shows it moving: how far it is, of how much, and for how long it has run."""
from __future__ import annotations

import logging
import time

EVERY_S = 10.0
"""Seconds between progress lines."""


class Progress:
    """Counts ``done`` of ``total`` units of a step named ``what`` and logs to ``log`` when
    ``EVERY_S`` seconds have passed since the step started or since its last line."""

    def __init__(self, log: logging.Logger, what: str, total: int, unit: str, every_s: float = EVERY_S) -> None:
        self.log, self.what, self.total, self.unit, self.every_s = log, what, total, unit, every_s
        self.started = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            share = done / self.total if self.total else 1.0
            self.log.info("%s: %s of %s %s (%.0f%%), %.0f s", self.what, f"{done:,}", f"{self.total:,}", self.unit,
                          100 * share, now - self.started)
