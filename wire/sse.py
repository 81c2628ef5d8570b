"""Server-Sent Events framing (WHATWG HTML, "server-sent events")."""

from __future__ import annotations

HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def encode_event(event_id: int, event_type: str, data: bytes) -> bytes:
    """One SSE frame. `data` is passed through; embedded newlines become extra `data:` lines."""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        data = b"\ndata: ".join(lines)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode("ascii"), data)


def encode_comment(text: str = "") -> bytes:
    """A comment frame, used as a keep-alive; clients ignore it."""
    return b": " + text.encode() + b"\n\n"
