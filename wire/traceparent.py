"""The W3C trace context header (`traceparent`): checked parsing, no I/O.

A `traceparent` comes from a client header or from gRPC metadata: untrusted input.
`parse` accepts only the version-00 form `00-<32 hex>-<16 hex>-<2 hex>` (lowercase,
ids not all zero, at most `MAX_LEN` bytes); anything else is None, and the caller
starts a new trace instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADER = "traceparent"
MAX_LEN = 55
_FORM = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True)
class TraceParent:
    trace_id: int
    span_id: int
    flags: int

    def header(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def parse(value: str | bytes | None) -> TraceParent | None:
    """The trace parent `value` names, or None for a missing or malformed one."""
    if value is None or len(value) != MAX_LEN:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _FORM.fullmatch(value)
    if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
        return None
    return TraceParent(int(match[1], 16), int(match[2], 16), int(match[3], 16))
