"""The conversation and its timeline, as the reference's clients read them, derived on
read from what the gateway already logs (`GET /api/sessions/{id}/messages`, `…/events`).

Nothing extra is written per event: the agent's side is the `message` events of the log
(the raw SDK messages), the user's side is each turn's prompt, recorded once per turn
(`gateway/store.py prompts`) under the id of the turn's `session_start`. So a message's
`sequence` is the id of the SSE event it came from, and `after` pages by it.

A timeline row is classified from one logged event as the reference classifies a bridge
message; one event can give several rows (an assistant message with a text and a
tool_use block), so a row's `sequence` is `event id * ROWS_PER_EVENT + its index`.
Record ids are UUIDv5 of the session, the kind and the sequence: the same on every call.
Every payload came from the sandbox: anything that is not the shape looked for is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from itertools import islice
from typing import Any

import orjson

from gateway.store import PROMPT, HistoryRow, SessionRow, Store
from gateway.timestamps import iso_utc
from wire import events

ID_NAMESPACE = uuid.UUID("6f1d2b8e-3c4a-5e7f-9a0b-1c2d3e4f5a6b")
ROWS_PER_EVENT = 1000
"""Timeline rows one event may give (more are dropped): the step of `sequence`."""
ASSISTANT_TYPES = ("assistant", "result")
TIMELINE_TYPES = ("text", "tool_start", "tool_result", "reasoning", "error", "turn_complete",
                  "lifecycle")
TIMELINE_SOURCES = (events.MESSAGE, events.ERROR, events.SESSION_START, events.DONE)

Record = dict[str, Any]


def user_message(prompt: str, blocks: object = None) -> bytes:
    """A turn's user message as the reference stores it: `{type:"user", content}`, the
    content blocks when the client sent blocks, else the text."""
    return orjson.dumps({"type": "user", "content": prompt if blocks is None else blocks})


def record_id(session_id: str, kind: str, sequence: int) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{session_id}/{kind}/{sequence}"))


def _parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def messages(store: Store, session: SessionRow, after: int, limit: int) -> list[Record]:
    """The user's messages and the agent's complete ones (`assistant`, `result`) after
    sequence `after`, oldest first, at most `limit`."""
    session_id = session.id
    found: list[Record] = []
    for row in store.history_after(session_id, after, (events.MESSAGE,), prompts=True):
        if row.type == PROMPT:
            role = "user"
        else:
            parsed = _parse(row.data)
            if not isinstance(parsed, dict) or parsed.get("type") not in ASSISTANT_TYPES:
                continue
            role = "assistant"
        found.append({
            "id": record_id(session_id, "message", row.seq),
            "sessionId": session_id,
            "tenantId": session.tenant_id,
            "role": role,
            "content": row.data.decode("utf-8", "replace"),
            "sequence": row.seq,
            "createdAt": iso_utc(row.created_at),
        })
        if len(found) >= limit:
            break
    return found


def timeline(store: Store, session: SessionRow, after: int, limit: int,
             only: str | None = None) -> list[Record]:
    """Timeline rows after sequence `after` (of type `only`, if given), at most `limit`."""
    session_id = session.id
    found: list[Record] = []
    first_event = after // ROWS_PER_EVENT - 1
    for row in store.history_after(session_id, first_event, TIMELINE_SOURCES):
        for index, (kind, data) in enumerate(islice(classify(row), ROWS_PER_EVENT)):
            sequence = row.seq * ROWS_PER_EVENT + index
            if sequence <= after or (only is not None and kind != only):
                continue
            found.append({
                "id": record_id(session_id, "event", sequence),
                "sessionId": session_id,
                "tenantId": session.tenant_id,
                "type": kind,
                "data": None if data is None else orjson.dumps(data).decode(),
                "sequence": sequence,
                "createdAt": iso_utc(row.created_at),
            })
            if len(found) >= limit:
                return found
    return found


def classify(row: HistoryRow) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """The timeline rows of one logged event (the reference's `classifyBridgeMessage`,
    plus `error` events and each turn's start and end as `lifecycle`)."""
    parsed = _parse(row.data)
    payload = parsed if isinstance(parsed, dict) else {}
    if row.type == events.MESSAGE:
        yield from _classify_message(payload)
    elif row.type == events.ERROR:
        yield "error", payload
    elif row.type == events.SESSION_START:
        yield "lifecycle", {"action": "turn_started"}
    elif row.type == events.DONE:
        yield "lifecycle", {"action": "turn_ended", "status": payload.get("status")}


def _classify_message(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = message.get("type")
    body = message.get("message")
    blocks = body.get("content") if isinstance(body, dict) else None
    blocks = [block for block in blocks if isinstance(block, dict)] \
        if isinstance(blocks, list) else []
    if kind == "assistant":
        for block in blocks:
            block_type = block.get("type")
            if block_type == "text":
                yield "text", {"text": block.get("text")}
            elif block_type == "tool_use":
                yield "tool_start", {"toolName": block.get("name"), "toolId": block.get("id"),
                                     "input": block.get("input")}
            elif block_type == "thinking":
                yield "reasoning", {"thinking": block.get("thinking")}
    elif kind == "user" and isinstance(message.get("tool_use_result"), dict):
        result = message["tool_use_result"]
        tool_id = result.get("tool_use_id") or next(
            (block.get("tool_use_id") for block in blocks
             if block.get("type") == "tool_result"), None)
        yield "tool_result", {"toolName": result.get("tool_name"), "toolId": tool_id,
                              "stdout": result.get("stdout"), "stderr": result.get("stderr")}
    elif kind == "result":
        yield "turn_complete", {"numTurns": message.get("num_turns"),
                                "result": message.get("result")}
