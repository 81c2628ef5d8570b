"""A small SSE parser for tests: bytes in, (id, event, data) records out."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    id: int
    event: str
    data: Any


def parse_sse(chunks: Iterable[bytes]) -> list[SseEvent]:
    buffer = b""
    out: list[SseEvent] = []
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields: dict[str, list[str]] = {}
            for line in block.decode().split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
            if "data" in fields:
                out.append(SseEvent(int(fields["id"][0]), fields["event"][0],
                                    json.loads("\n".join(fields["data"]))))
    assert buffer == b"", f"stream ended mid-frame: {buffer!r}"
    return out


def reply_text(events: list[SseEvent]) -> str:
    return "".join(e.data["delta"] for e in events if e.event == "text_delta")


def assistant_text(events: list[SseEvent]) -> str:
    """The text blocks of the turn's SDK assistant `message` frames, joined."""
    return "".join(
        block["text"]
        for e in events if e.event == "message" and e.data.get("type") == "assistant"
        for block in e.data["message"]["content"] if block.get("type") == "text")
