"""Command-line plumbing every command shares: logging set-up, name lists, and the one place where
errors become a message on stderr and an exit status."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from .errors import RecJobError, UsageError

log = logging.getLogger("recjob")


def configure_logging(verbose: bool = False) -> None:
    """Log lines with a timestamp to stderr; INFO by default, DEBUG with ``verbose``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def run_cli(action: Callable[[], Any], verbose: bool = False) -> int:
    """Run ``action``; turn a RecJobError into ``error: <message>`` and its exit code."""
    configure_logging(verbose)
    try:
        action()
    except RecJobError as exc:
        log.debug("failure detail", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def parse_names(option: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated names, each one of ``allowed``; returned in ``allowed``'s order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UsageError(f"{option}: unknown name {unknown or text!r}; expected a comma-separated "
                         f"subset of {','.join(allowed)}")
    return tuple(n for n in allowed if n in names)
