"""Timestamps on the wire: ISO-8601 UTC with milliseconds, as the reference API sends them.

The store keeps unix seconds (REAL); responses carry what JavaScript's
`Date.prototype.toISOString()` writes (`2026-12-02T01:02:03.456Z`), which the
reference's clients parse with an ISO-8601 parser (a number raises there).
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(seconds: float) -> str:
    """`seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (milliseconds truncated)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
