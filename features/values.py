"""Numeric values: what features take from an event, and the ranges the edge
enforces on the fields that features and rules read.

Two layers, so that one bad number can never break state:

- At the edge (:func:`check_number`), a field that features or rules read
  must be a finite number within its documented range, or the event is
  rejected, naming the field and the problem.
- Behind the edge (:func:`number`), a value that is not a finite number of a
  sane magnitude is read as missing, so a bug elsewhere that lets one through
  cannot poison sums, encodings or models.

>>> number("19.5"), number(float("inf")), number(1e300), number(True)
(19.5, None, None, None)
>>> check_number("price", "1e999")
'expected a finite number, got 1e999'
>>> check_number("scroll_depth", 0.4) is None, check_number("scroll_depth", 75)
(True, 'is 75, out of its range [0, 1] (the fraction of the page scrolled)')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Beyond this magnitude a value is not a measurement: sums of many of them
# stay far inside a float64 and an int64.
MAX_MAGNITUDE = 1e15

# The documented range of each numeric property that the default features read.
RANGES: Mapping[str, tuple[float, float, str]] = {
    "price": (0.0, 1e9, "a unit price"),
    "revenue": (-1e9, 1e9, "an order's revenue, negative for a refund"),
    "quantity": (0.0, 1e6, "items in the line"),
    "time_on_page_s": (0.0, 604_800.0, "seconds on the page, at most a week"),
    "scroll_depth": (0.0, 1.0, "the fraction of the page scrolled"),
}
# Any other numeric property a configured feature or rule reads.
DEFAULT_RANGE = (-MAX_MAGNITUDE, MAX_MAGNITUDE, "a number")


def number(value: Any) -> float | None:
    """A numeric property value, or None where it is missing, not a number,
    not finite, or beyond :data:`MAX_MAGNITUDE`."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value if -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE else None
    if isinstance(value, int):
        return float(value) if -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE else None
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return f if -MAX_MAGNITUDE <= f <= MAX_MAGNITUDE else None
    return None


def check_number(name: str, value: Any) -> str | None:
    """The problem with ``value`` as the numeric field ``name``, or None when
    it is fine (a finite number, or a numeric string, within the range)."""
    if isinstance(value, bool):
        return f"expected a number, got {value!r}"
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return f"expected a number, got {value[:64]!r}"
        if not math.isfinite(f):
            return f"expected a finite number, got {value[:64]}"
    elif isinstance(value, int):
        f = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"expected a finite number, got {value}"
        f = value
    else:
        return f"expected a number, got {type(value).__name__}"
    low, high, what = RANGES.get(name, DEFAULT_RANGE)
    if not low <= f <= high:
        shown = value[:64] if isinstance(value, str) else (f"{value:.6g}" if isinstance(value, float) else value)
        return f"is {shown}, out of its range [{low:g}, {high:g}] ({what})"
    return None


def plain_json(value: Any, depth: int = 32) -> Any:
    """``value`` as JSON can always hold it: string keys, 64-bit integers,
    finite floats (others become None), at most ``depth`` levels (deeper
    containers become a marker). For encoders' fallback, never the hot path."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping | list | tuple):
        if depth <= 1:
            return "<nested too deep>"
        if isinstance(value, Mapping):
            return {str(k): plain_json(v, depth - 1) for k, v in value.items()}
        return [plain_json(v, depth - 1) for v in value]
    return str(value)


def exact_json(value: Any) -> Any:
    """A scalar as JSON holds it exactly: a non-finite float is tagged
    (``{"float": "inf"}``) where :func:`plain_json` would drop it.

    >>> exact_json(float("inf")), from_exact_json(exact_json(float("-inf"))), exact_json(2.5)
    ({'float': 'inf'}, -inf, 2.5)
    """
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def from_exact_json(value: Any) -> Any:
    """The scalar :func:`exact_json` wrote."""
    if isinstance(value, dict) and set(value) == {"float"}:
        return float(value["float"])
    return value
