"""Strict JSON for every file and log line the job writes: no ``NaN`` or ``Infinity`` tokens,
which Python's ``json`` writes by default and strict parsers (JavaScript, Go, jq, Spark) reject.

A figure that has no value (a mean over no pairs, a metric over no ratings) is ``null``; the
code that produces it also records why, beside it. ``finite`` is the safety net: any float that
is not finite still becomes ``null`` rather than an invalid token.
"""
from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth, replaced by None (numpy scalars included)."""
    if isinstance(value, float) or type(value).__name__ in ("float32", "float64", "float16"):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of ``value`` with non-finite floats as null; never writes NaN or Infinity."""
    return json.dumps(finite(value), allow_nan=False, **options)


def _refuse(token: str) -> float:
    raise ValueError(f"not strict JSON: {token}")


def loads(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``, as strict parsers do."""
    return json.loads(text, parse_constant=_refuse)
