"""Domain exceptions: one class per failure kind, each carrying a message a user can act on."""
from __future__ import annotations

from typing import Any


class RecJobError(Exception):
    """Base class for every failure the job reports to its user; ``exit_code`` is the CLI status."""

    exit_code = 1


class UsageError(RecJobError):
    """A command-line option has a value the job cannot use."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value (from an option or in code) that no run could use."""


class DataError(RecJobError):
    """An input ratings or items file is missing, unreadable or malformed."""


class ChecksumError(DataError):
    """A downloaded or cached file does not have the checksum it must have."""


class FetchError(DataError):
    """No source of the MovieLens data could be reached or verified."""


class TrainingError(RecJobError):
    """Training could not finish (a worker process died)."""


class SparkJobError(RecJobError):
    """A Spark job failed: one of its tasks failed as many times as Spark allows."""


class BundleError(RecJobError):
    """A model bundle is missing a file, corrupted, or of a schema this code does not read."""


class ParityError(RecJobError):
    """ONNX outputs differ from the torch reference by more than the tolerance.

    Carries the worst pair so the message says where the models disagree.
    """

    def __init__(self, model: str, max_abs_diff: float, tolerance: float,
                 worst_pair: tuple[Any, Any], context: str, keys: str = "(user_id, item_id)") -> None:
        self.model = model
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        self.worst_pair = worst_pair
        super().__init__(
            f"{context}: model '{model}' differs from the torch reference by {max_abs_diff:.3g} "
            f"(tolerance {tolerance:g}) at {keys} = {worst_pair}"
        )


class VerificationError(RecJobError):
    """A written table does not hold what the run computed (row counts, schema, contents)."""


class PublishError(RecJobError):
    """The output location cannot be written, or a run could not be published atomically."""


class StoreError(RecJobError):
    """An object store refused a request or cannot be reached: wrong credentials, a missing bucket,
    an unreachable endpoint."""


class LockError(PublishError):
    """Another run holds the lock on the same output root: a scheduler may try again later
    (``EX_TEMPFAIL`` from sysexits.h)."""

    exit_code = 75


class GateRefused(RecJobError):
    """The run's results were refused by a check of their quality (the model gate, a run-to-run
    threshold): nothing became ``latest``."""

    exit_code = 3
