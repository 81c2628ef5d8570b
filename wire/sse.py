"""Server-Sent Events framing (WHATWG HTML, "server-sent events").

Encode, never splice: nothing here can be made to write a line break or a second
field by the bytes it is given. The event type comes from the sandbox (untrusted),
so it must be a plain token or the encoder refuses it (ValueError); the id is an
integer we number ourselves; data is split on every line break a client honours.
"""

from __future__ import annotations

import re

from wire.events import TURN_EVENT_TYPES

HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

MAX_EVENT_ID = 2**63 - 1
"""Event ids are SQLite integers (int64); a client sends one back as Last-Event-ID."""
MAX_EVENT_TYPE_LENGTH = 64
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""A plain token: what every event type we name looks like, and all an `event:` line takes."""


def is_event_type(name: str) -> bool:
    """True when `name` can be written as an `event:` value: a plain lowercase token."""
    return name in TURN_EVENT_TYPES or _EVENT_TYPE.fullmatch(name) is not None


def encode_event(event_id: int, event_type: str, data: bytes) -> bytes:
    """One SSE frame, read back by any conforming client as exactly this one event.

    Raises ValueError for an id that is not an int in [0, MAX_EVENT_ID] or a type
    that is not a plain token (`is_event_type`). `data` may hold any bytes: CR, LF
    and CRLF each end a `data:` line (all three are line ends to a client, which
    joins the lines with LF); NUL and other control characters, U+2028/U+2029 and
    invalid UTF-8 are no line end to a client (it replaces invalid UTF-8 with
    U+FFFD), so they pass through as they are.
    """
    if type(event_id) is not int or not 0 <= event_id <= MAX_EVENT_ID:
        raise ValueError(f"SSE event id must be an int in [0, {MAX_EVENT_ID}]: {event_id!r}")
    if event_type not in TURN_EVENT_TYPES and _EVENT_TYPE.fullmatch(event_type) is None:
        raise ValueError(f"SSE event type is not a plain token: {event_type[:80]!r}")
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        data = b"\ndata: ".join(lines)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode("ascii"), data)


def encode_comment(text: str = "") -> bytes:
    """A comment frame, used as a keep-alive; clients ignore it. No line breaks in `text`."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"an SSE comment cannot hold a line break: {text[:80]!r}")
    return b": " + text.encode() + b"\n\n"
