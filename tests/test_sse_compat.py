"""The SSE turn in the reference's shapes (../shared/reference-api.md §2.1, §2.3, §5), read
from a real gateway process (real sandbox, mock agent), and by the published Python client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from ash_sdk.ash_client import AshClient
from ash_sdk.streaming import (
    DoneEvent,
    MessageEvent,
    SessionStartEvent,
    TextDeltaEvent,
    ToolResultEvent,
    ToolUseEvent,
    TurnCompleteEvent,
)

from tests.conftest import send_message
from tests.gateway_process import GatewayProcess, turn_with_bridge_killed
from tests.sse_client import SseEvent, parse_sse

REFERENCE_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "session_start": {"sessionId": str, "version": str},
    "text_delta": {"delta": str},
    "thinking_delta": {"delta": str},
    "tool_use": {"id": str, "name": str, "input": dict},
    "tool_result": {"tool_use_id": str, "content": (str, list), "is_error": bool},
    "turn_complete": {"numTurns": int, "result": str},
    "error": {"error": str},
    "done": {"sessionId": str},
    "message": {"type": str},
}
"""The fields (and their JSON types) the reference sends and its clients read, per event."""
SDK_MESSAGE_TYPES = {"assistant", "user", "system", "result", "stream_event"}


def shape_errors(events: list[SseEvent], session_id: str) -> list[str]:
    """Every way the turn's frames differ from the reference's shapes."""
    errors = []
    for event in events:
        for name, kind in REFERENCE_FIELDS.get(event.event, {}).items():
            value = event.data.get(name) if isinstance(event.data, dict) else None
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
                errors.append(f"{event.event}.{name} is {value!r}")
        if event.event == "message":
            errors += sdk_message_errors(event.data)
    if not events or events[0].event != "session_start":
        errors.append(f"first frame is {events[0].event if events else None}, not session_start")
    elif events[0].data.get("sessionId") != session_id:
        errors.append(f"session_start names {events[0].data.get('sessionId')!r}")
    if not events or events[-1].event != "done" or events[-1].data.get("sessionId") != session_id:
        errors.append(f"last frame is not done {{sessionId: {session_id}}}")
    return errors


def sdk_message_errors(message: Any) -> list[str]:
    kind = message.get("type")
    if kind not in SDK_MESSAGE_TYPES:
        return [f"message.type is {kind!r}"]
    if kind in ("assistant", "user"):
        inner = message.get("message")
        if not isinstance(inner, dict) or not isinstance(inner.get("content"), list):
            return [f"{kind} message has no message.content list: {message!r}"[:200]]
    if kind == "result" and not isinstance(message.get("num_turns"), int):
        return [f"result message has no num_turns: {message!r}"[:200]]
    return []


def assistant_text(events: list[SseEvent]) -> str:
    return "".join(block["text"] for e in events if e.event == "message"
                   and e.data["type"] == "assistant"
                   for block in e.data["message"]["content"] if block["type"] == "text")


def test_a_turn_streams_every_frame_in_the_reference_shape(client: httpx.Client,
                                                           session: dict) -> None:
    events = send_message(client, session["id"], "hi", options={"tokens": 3})
    assert shape_errors(events, session["id"]) == []
    names = [e.event for e in events]
    assert names == ["session_start", "text_delta", "text_delta", "text_delta", "message",
                     "turn_complete", "message", "done"]
    deltas = "".join(e.data["delta"] for e in events if e.event == "text_delta")
    assert deltas == assistant_text(events) == events[5].data["result"]
    assert events[6].data["type"] == "result" and events[6].data["result"] == deltas


def test_without_partial_messages_the_text_comes_only_in_the_sdk_message(
        client: httpx.Client, session: dict) -> None:
    events = send_message(client, session["id"], "hi", includePartialMessages=False)
    assert shape_errors(events, session["id"]) == []
    assert [e.event for e in events] == ["session_start", "message", "turn_complete",
                                         "message", "done"]
    assert "You said: hi" in assistant_text(events)


def test_partial_messages_must_be_a_boolean(client: httpx.Client, session: dict) -> None:
    response = client.post(f"/api/sessions/{session['id']}/messages",
                           json={"content": "hi", "includePartialMessages": "yes"})
    assert response.status_code == 400
    assert response.json() == {"error": "`includePartialMessages` must be a boolean",
                               "statusCode": 400}


def test_a_tool_call_sends_tool_use_before_its_sdk_message(client: httpx.Client,
                                                           session: dict) -> None:
    events = send_message(client, session["id"], "/bash echo hi")
    assert shape_errors(events, session["id"]) == []
    names = [e.event for e in events]
    assert names[:5] == ["session_start", "tool_use", "message", "tool_result", "message"]
    assert events[2].data["message"]["content"][0]["type"] == "tool_use"
    assert events[4].data["type"] == "user"
    assert events[4].data["tool_use_result"]["stdout"] == events[3].data["content"] == "hi\n"


def test_a_sandbox_lost_mid_turn_ends_with_error_and_done_naming_the_session(
        client: httpx.Client, session: dict) -> None:
    sid = session["id"]
    events = turn_with_bridge_killed(client, sid)
    assert [e.event for e in events][-2:] == ["error", "done"]
    assert shape_errors(events, sid) == []
    assert events[-1].data == {"sessionId": sid, "status": "error"}


def test_session_start_is_logged_with_its_id_and_replayed_on_rejoin(
        client: httpx.Client, session: dict) -> None:
    sid = session["id"]
    first = send_message(client, sid, "one")
    second = send_message(client, sid, "two")
    history = client.get(f"/api/sessions/{sid}/stream/events").json()["events"]
    assert [(e["id"], e["type"]) for e in history] == [(e.id, e.event) for e in first + second]
    with client.stream("GET", f"/api/sessions/{sid}/stream",
                       headers={"last-event-id": str(first[-1].id)}) as response:
        replayed: list[SseEvent] = []
        buffer = b""
        for chunk in response.iter_raw():
            buffer += chunk
            if b"event: done" in buffer:
                break
        replayed = parse_sse([buffer])
    assert [(e.id, e.event) for e in replayed] == [(e.id, e.event) for e in second]
    assert replayed[0].data == {"sessionId": sid, "version": second[0].data["version"]}


@pytest.mark.parametrize("partials", [True, False])
def test_the_published_python_client_reads_the_streamed_reply(
        gateway: GatewayProcess, session: dict, partials: bool) -> None:
    """`ash-ai-sdk` 0.0.22 (`AshClient.send_message_stream`, HTTP/1.1) yields the reply's
    text in the assistant message, and as `text_delta`s whether or not it asks for
    partial messages (it sends `includePartialMessages` only when true; absent, ours
    streams: docs/compat.md); `session_start` / `done` carry the session's id."""
    sid = session["id"]
    ash = AshClient(gateway.url, gateway.api_key)
    events = list(ash.send_message_stream(sid, "hi sdk", include_partial_messages=partials))
    assert isinstance(events[0], SessionStartEvent) and events[0].session_id == sid
    assert isinstance(events[-1], DoneEvent) and events[-1].session_id == sid
    deltas = "".join(e.delta for e in events if isinstance(e, TextDeltaEvent))
    assistant = "".join(
        block["text"] for e in events if isinstance(e, MessageEvent)
        and e.data["type"] == "assistant" for block in e.data["message"]["content"])
    complete = [e for e in events if isinstance(e, TurnCompleteEvent)]
    assert "You said: hi sdk" in assistant
    assert deltas == assistant
    assert [(c.num_turns, c.result) for c in complete] == [(1, assistant)]


def test_the_published_python_client_reads_a_tool_call(gateway: GatewayProcess,
                                                       session: dict) -> None:
    ash = AshClient(gateway.url, gateway.api_key)
    events = list(ash.send_message_stream(session["id"], "/bash echo tool"))
    tool_use = next(e for e in events if isinstance(e, ToolUseEvent))
    tool_result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert (tool_use.name, tool_use.input) == ("Bash", {"command": "echo tool"})
    assert (tool_result.tool_use_id, tool_result.content, tool_result.is_error) == (
        tool_use.id, "tool\n", False)
