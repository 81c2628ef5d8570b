"""One turn: POST a message and read its SSE reply as it streams (`session send`, `chat`,
the MCP server's send_message)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from ash_cli.client import ApiClient, AshError
from ash_cli.sse import SseEvent, parse_sse


def turn_events(client: ApiClient, session_id: str, message: str) -> Iterator[SseEvent]:
    """Each event of the turn, as it arrives (the stream ends after `done`)."""
    try:
        with client.stream("POST", f"/api/sessions/{session_id}/messages",
                           json={"content": message}) as response:
            yield from parse_sse(response.iter_lines())
    except httpx.HTTPError as exc:
        raise client.transport_error(exc) from None


def delta_of(event: SseEvent) -> str:
    """The text a `text_delta` adds ("" for any other event)."""
    if event.event != "text_delta":
        return ""
    payload = event.payload()
    if isinstance(payload, dict):
        text = payload.get("delta", payload.get("text"))
        return text if isinstance(text, str) else ""
    return ""


def error_of(event: SseEvent) -> str:
    payload = event.payload()
    if isinstance(payload, dict) and payload.get("error"):
        return str(payload["error"])
    return str(payload)


@dataclass
class TurnReply:
    text: str = ""
    errors: list[str] = field(default_factory=list)
    events: int = 0


def collect_reply(client: ApiClient, session_id: str, message: str) -> TurnReply:
    """The whole reply text of a turn (what the MCP tool answers)."""
    reply = TurnReply()
    parts: list[str] = []
    for event in turn_events(client, session_id, message):
        reply.events += 1
        parts.append(delta_of(event))
        if event.event == "error":
            reply.errors.append(error_of(event))
    reply.text = "".join(parts)
    return reply


def check_ended(errors: list[str]) -> None:
    if errors:
        raise AshError(f"the turn failed: {errors[0]}")
