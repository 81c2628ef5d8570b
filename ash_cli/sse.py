"""Server-Sent Events, parsed from a response's lines (the WHATWG rules the gateway writes)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def payload(self) -> Any:
        """`data` as JSON, or the text itself when it is not JSON."""
        try:
            return json.loads(self.data)
        except ValueError:
            return self.data


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Events from decoded lines (no line ends); comments (keep-alives) are skipped."""
    event, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            event_id = value
