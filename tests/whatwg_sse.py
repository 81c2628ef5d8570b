"""A strict Server-Sent Events parser written from the WHATWG HTML standard, for tests.

Unlike `tests/sse_client.py` (which reads our own well-formed streams) this one does
exactly what a conforming `EventSource` does with *any* bytes: UTF-8 decoding with
replacement, a leading BOM dropped, lines ended by CRLF, a lone LF or a lone CR, field
names taken verbatim, one leading space stripped from a value, `id` values containing
NUL ignored, `retry` only when all ASCII digits, and a pending event discarded at the
end of the stream. What it returns is what a browser would dispatch.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class DispatchedEvent:
    last_event_id: str
    """The stream's last event ID when this event was dispatched (what a reconnect sends)."""
    type: str
    data: str


@dataclass(slots=True)
class ParsedStream:
    events: list[DispatchedEvent]
    last_event_id: str
    retry_ms: int | None
    """Set when a `retry` field changed the reconnection time."""


def parse_stream(raw: bytes) -> ParsedStream:
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=True)
    text = text.removeprefix("\ufeff")
    lines = _LINE_END.split(text)
    # The text after the last line end is an unterminated line: never processed.
    complete = lines[:-1]
    events: list[DispatchedEvent] = []
    data = ""
    event_type = ""
    last_id = ""
    pending_id = ""
    retry: int | None = None
    for line in complete:
        if line == "":
            last_id = pending_id
            if data:
                events.append(DispatchedEvent(last_id, event_type or "message",
                                              data.removesuffix("\n")))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                pending_id = value
        elif name == "retry":
            if value and all("0" <= c <= "9" for c in value):
                retry = int(value)
    return ParsedStream(events, last_id, retry)
