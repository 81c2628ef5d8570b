"""Timestamps on the wire: ISO-8601 UTC with milliseconds, as the reference API sends them.

The store keeps unix seconds (REAL); responses carry what JavaScript's
`Date.prototype.toISOString()` writes (`2026-12-02T01:02:03.456Z`), which the
reference's clients parse with an ISO-8601 parser (a number raises there); query
parameters that bound a time range are read back from the same form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime


def iso_utc(seconds: float) -> str:
    """`seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (milliseconds truncated)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?)?")
MAX_ISO_LENGTH = 40


def parse_iso(text: str) -> float | None:
    """An ISO-8601 date or date-time (RFC 3339; no offset means UTC) as unix seconds; None
    when `text` is not one. A leap second (`:60`) counts as the second before it."""
    text = text.strip().upper()
    if len(text) > MAX_ISO_LENGTH or not _RFC3339.fullmatch(text):
        return None
    text = re.sub(r"(T\d{2}:\d{2}):60", r"\1:59", text)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None
