"""Command-line plumbing every command shares: logging set-up (text or JSON lines), the metrics
file, name lists, and the one place where errors become a message on stderr and an exit status.

Exit statuses, the contract with schedulers: 0 published (or up to date); 1 an error (bad input,
a failed check); 2 bad usage; 3 refused by the model gate or a run-to-run threshold; 75
(``EX_TEMPFAIL``) another run holds the lock, try again later; 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from . import strict_json
from .errors import RecJobError, StoreError, UsageError
from .metrics import Sample, check_metrics_path, write_metrics
from .store import Location, parse_location

log = logging.getLogger("recjob")

LOG_FORMATS = ("text", "json")
INTERRUPTED = 130


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, stage (the module that logged it,
    or the ``stage`` a record names), message, and ``figures`` where the record carries some."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "stage": getattr(record, "stage", record.name),
            "message": record.getMessage(),
        }
        for key in ("figures", "exit_code"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return strict_json.dumps(entry, default=str)


QUIET_LIBRARIES = ("botocore", "boto3", "urllib3")


def configure_logging(verbose: bool = False, log_format: str = "text") -> None:
    """Log lines to stderr, with a timestamp or as JSON objects; INFO by default, DEBUG with
    ``verbose``. Python warnings go through logging too, so JSON output stays JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    for library in QUIET_LIBRARIES:   # their INFO lines (where credentials were found) are not the job's
        logging.getLogger(library).setLevel(logging.DEBUG if verbose else logging.WARNING)


def add_scheduler_options(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--metrics-file``, the same on every command."""
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="text lines, or one JSON object per line for log collectors (default: %(default)s)")
    parser.add_argument("--metrics-file", type=parse_location, metavar="PATH",
                        help="write the run's figures here in the Prometheus text format, atomically "
                             "(for node_exporter's textfile collector; name it *.prom; a store URI works too)")


def setup_failure(exc: RecJobError) -> int:
    """A failure before the options are parsed (an installed family that cannot be loaded): one
    error line, and its exit status."""
    configure_logging(False, "text")
    _report_error(str(exc), exc.exit_code, "text")
    return exc.exit_code


def run_cli(action: Callable[[], list[Sample] | None], verbose: bool = False, *, log_format: str = "text",
            metrics_file: Location | None = None, job: str = "run") -> int:
    """Run ``action``; turn a RecJobError into one error line and its exit status. With a metrics
    file, write the samples ``action`` returned plus the exit status, the run's duration and its
    finish time, whether it succeeded or not (a failed run's file says so: alerts can key on it)."""
    configure_logging(verbose, log_format)
    started = time.time()
    samples: list[Sample] = []
    try:
        if metrics_file is not None:
            check_metrics_path(metrics_file)
        result = action()
        samples = result if isinstance(result, list) else []
        code = 0
    except RecJobError as exc:
        log.debug("failure detail", exc_info=True)
        code = exc.exit_code
        samples = list(getattr(exc, "samples", []))
        _report_error(str(exc), code, log_format)
    except KeyboardInterrupt:
        code = INTERRUPTED
        _report_error("interrupted", code, log_format)
    if metrics_file is not None and _writable(metrics_file):
        finished = time.time()
        _write_metrics(metrics_file, job, [
            Sample("exit_code", code, help="exit status of the last run: 0 published, 1 error, 2 bad usage, "
                                           "3 refused by a gate, 75 locked (retry later)"),
            Sample("last_run_timestamp_seconds", round(finished, 3), help="when the last run ended (Unix seconds)"),
            Sample("last_run_duration_seconds", round(finished - started, 3), help="the last run's wall time"),
            *samples])
    return code


def _write_metrics(path: Location, job: str, samples: list[Sample]) -> None:
    try:
        write_metrics(path, job, samples)
    except StoreError as exc:
        log.warning("metrics not written: %s", exc)


def _writable(path: Location) -> bool:
    try:
        check_metrics_path(path)
        return True
    except (UsageError, StoreError):
        return False


def _report_error(message: str, code: int, log_format: str) -> None:
    if log_format == "json":
        log.error(message, extra={"stage": "error", "exit_code": code})
    else:
        print(f"error: {message}", file=sys.stderr)


def parse_names(option: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated names, each one of ``allowed``; returned in ``allowed``'s order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UsageError(f"{option}: unknown name {unknown or text!r}; expected a comma-separated "
                         f"subset of {','.join(allowed)}")
    return tuple(n for n in allowed if n in names)
