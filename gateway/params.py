"""Strict parsing of the numbers a client sends: query parameters, headers, JSON fields.

Python's `int()` takes `1_0`, ` 7 `, `+3`, `٣` (Arabic-Indic digits) and numbers of any
length; `float()` takes `nan` and `1e999`. A client's number is none of those: an
integer is 1 to 19 ASCII digits (it fits an int64, the SQLite integer), and a JSON
number is an int or a finite float, never a boolean, inside the bounds of its field.
Anything else is a 400 naming the field and what it takes.
"""

from __future__ import annotations

import math

from gateway.http import ApiError

MAX_INT_DIGITS = 19
INT64_MAX = 2**63 - 1


def parse_int(raw: str | bytes, name: str, *, low: int, high: int) -> int:
    """`raw` as an integer in [low, high]: ASCII digits only, 1 to 19 of them."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if not (0 < len(text) <= MAX_INT_DIGITS and text.isascii() and text.isdigit()):
        raise ApiError(400, f"{name} must be an integer of 1 to {MAX_INT_DIGITS} digits "
                            f"(0-9 only), between {low} and {high}")
    value = int(text)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return value


def int_param(params: dict[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """The query parameter `name` (strictly an integer in [low, high]), or `default`."""
    raw = params.get(name)
    if raw is None:
        return default
    return parse_int(raw, f"`{name}`", low=low, high=high)


def number_value(value: object, name: str, *, low: float, high: float,
                 integer: bool = False, low_exclusive: bool = False, unit: str = "") -> float:
    """A JSON number in its bounds: an int (or, unless `integer`, a finite float)."""
    kind = "an integer" if integer else "a number"
    opening = "(" if low_exclusive else "["
    bounds = f"{opening}{low:g}, {high:g}]{' ' + unit if unit else ''}"
    allowed = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ApiError(400, f"{name} must be {kind} in {bounds}")
    if not math.isfinite(value) or value < low or value > high or (
            low_exclusive and value == low):
        raise ApiError(400, f"{name} must be {kind} in {bounds}")
    return value
