"""`POST /api/sessions/{id}/messages`: send a message and stream the turn (SSE);
`GET /api/sessions/{id}/messages`: the conversation so far (`gateway.conversation`); and
`GET /api/sessions/{id}/stream`: rejoin a session's stream after Last-Event-ID."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway import conversation
from gateway.api.operation import Content, Operation, Param
from gateway.api.schemas import BOOLEAN, INTEGER, ISO_TIME, STRING, array, obj
from gateway.api.sessions import session_of
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response
from gateway.params import INT64_MAX, int_param, number_value, parse_int
from gateway.sse_stream import SseWriter, stream_session
from runner import timing
from runner.timing import TIMING
from wire import events
from wire import timing as wt
from wire.content import CONTENT_BLOCKS_OPTION, MAX_BLOCKS, ContentError, parse_content
from wire.options import (
    EFFORTS,
    MAX_BUDGET_USD,
    MAX_MODEL_NAME,
    MAX_THINKING_BUDGET,
    MIN_THINKING_BUDGET,
    NUMERIC_OPTIONS,
    THINKING_TYPES,
)
from wire.session_config import SESSION_CONFIG_OPTION

TOP_LEVEL_OPTIONS = ("model", "maxTurns", events.INCLUDE_PARTIAL_MESSAGES, "maxBudgetUsd",
                     "effort", "thinking", "outputFormat")
"""Options a reference client sends beside `content` rather than inside `options`."""
MESSAGE_MAX_BODY = 50 * 1024 * 1024
"""The reference allows 50 MB on this route: room for image and document blocks."""
ON_DISCONNECT = ("continue", "interrupt")
DEFAULT_MESSAGES_LIMIT = 100
MAX_MESSAGES_LIMIT = 1000


def _message_options(body: dict[str, Any]) -> dict[str, Any]:
    """`options`, with `model` and `maxTurns` given beside `content` taking precedence.

    Every option an agent backend reads is checked against its bounds
    (`wire.options`); others pass through untouched (no backend reads them).
    """
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise ApiError(400, "`options` must be a JSON object")
    _check_options(options, "`options.{}`")
    top_level = {key: body[key] for key in TOP_LEVEL_OPTIONS if key in body}
    _check_options(top_level, "`{}`")
    return {**options, **top_level}


def _check_options(options: dict[str, Any], label: str) -> None:
    if "model" in options:
        model = options["model"]
        if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_NAME:
            raise ApiError(400, f"{label.format('model')} must be a string of 1 to "
                                f"{MAX_MODEL_NAME} characters")
    partials = options.get(events.INCLUDE_PARTIAL_MESSAGES)
    if partials is not None and not isinstance(partials, bool):
        raise ApiError(400, f"{label.format(events.INCLUDE_PARTIAL_MESSAGES)} must be a boolean")
    for name, option in NUMERIC_OPTIONS.items():
        if name in options:
            number_value(options[name], label.format(name), low=option.low, high=option.high,
                         integer=option.integer, unit=option.unit)
    if CONTENT_BLOCKS_OPTION in options:
        raise ApiError(400, f"{label.format(CONTENT_BLOCKS_OPTION)} is not an option: send "
                            "content blocks as `content`")
    if SESSION_CONFIG_OPTION in options:
        raise ApiError(400, f"{label.format(SESSION_CONFIG_OPTION)} is not an option: "
                            "PATCH /api/sessions/{id}/config changes the session's")
    _check_model_settings(options, label)


def _check_model_settings(options: dict[str, Any], label: str) -> None:
    """The reference's per-message model settings: budget, effort, thinking, output format."""
    if "maxBudgetUsd" in options:
        number_value(options["maxBudgetUsd"], label.format("maxBudgetUsd"), low=0,
                     high=MAX_BUDGET_USD, low_exclusive=True, unit="USD")
    if "effort" in options and options["effort"] not in EFFORTS:
        raise ApiError(400, f"{label.format('effort')} must be one of {', '.join(EFFORTS)}")
    if "thinking" in options:
        thinking = options["thinking"]
        if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_TYPES:
            raise ApiError(400, f"{label.format('thinking')} must be an object whose `type` is "
                                f"one of {', '.join(THINKING_TYPES)}")
        if "budgetTokens" in thinking:
            number_value(thinking["budgetTokens"], label.format("thinking") + ".budgetTokens",
                         low=MIN_THINKING_BUDGET, high=MAX_THINKING_BUDGET, integer=True)
    if "outputFormat" in options:
        output = options["outputFormat"]
        if (not isinstance(output, dict) or output.get("type") != "json_schema"
                or not isinstance(output.get("schema"), dict)):
            raise ApiError(400, f"{label.format('outputFormat')} must be "
                                "{\"type\": \"json_schema\", \"schema\": {...}}")


async def send_message(gw: Gateway, req: Request) -> None:
    request_in = time.perf_counter()
    turn_id = timing.request_in(req.header(wt.TURN_HEADER), req.path_params["id"]) if TIMING else ""
    body = await req.json_object(MESSAGE_MAX_BODY)
    if "content" not in body:
        raise ApiError(400, "`content` is required")
    try:
        content = parse_content(body["content"])
    except ContentError as exc:
        raise ApiError(400, str(exc)) from None
    options = _message_options(body)
    if content.blocks is not None:
        options[CONTENT_BLOCKS_OPTION] = content.blocks
    on_disconnect = body.get("onDisconnect", "continue")
    if on_disconnect not in ON_DISCONNECT:
        raise ApiError(400, "`onDisconnect` must be \"continue\" or \"interrupt\"")
    row = await gw.sessions.begin_turn(req.path_params["id"], req.tenant_id)
    if TIMING:
        timing.point(wt.GATEWAY_SESSION_FOUND, turn_id, row.id)
    subscriber = gw.sessions.feeds.subscribe(row.id)
    writer = SseWriter(req, gw.stream_settings, gw.metrics, request_in)
    try:
        await writer.start()
    except BaseException:
        gw.sessions.feeds.unsubscribe(row.id, subscriber)
        gw.sessions.abandon_turn(row.id)
        raise
    gw.sessions.start_turn(row, content.prompt, options, turn_id)

    def interrupt() -> None:
        asyncio.get_running_loop().create_task(gw.sessions.interrupt(row.id))

    try:
        await stream_session(
            writer, subscriber, session_id=row.id, until_done=True,
            on_disconnect=interrupt if on_disconnect == "interrupt" else None, turn_id=turn_id,
        )
    finally:
        gw.sessions.feeds.unsubscribe(row.id, subscriber)


async def list_messages(gw: Gateway, req: Request) -> Response:
    params = req.query()
    after = int_param(params, "after", 0, low=0, high=INT64_MAX)
    limit = int_param(params, "limit", DEFAULT_MESSAGES_LIMIT, low=1, high=MAX_MESSAGES_LIMIT)
    session = session_of(gw, req)
    gw.sessions.event_log.flush()
    return json_response({"messages": conversation.messages(gw.store, session, after, limit)})


def _last_event_id(req: Request) -> int:
    """The id to resume after: the Last-Event-ID header, else `?after=`, else 0."""
    header = req.header(b"last-event-id")
    if header is not None:
        return parse_int(header, "Last-Event-ID (an event id)", low=0, high=INT64_MAX)
    return int_param(req.query(), "after", 0, low=0, high=INT64_MAX)


async def stream_session_events(gw: Gateway, req: Request) -> None:
    """Replay what came after Last-Event-ID (or ?after=N), then stay live across turns."""
    session_id = session_of(gw, req).id
    after = _last_event_id(req)
    writer = SseWriter(req, gw.stream_settings, gw.metrics)
    subscriber, logged = gw.sessions.subscribe_from(session_id, after)
    try:
        await writer.start()
        await stream_session(
            writer, subscriber, store=gw.store, session_id=session_id,
            replay_after=after, replay_until=logged, until_done=False,
        )
    finally:
        gw.sessions.feeds.unsubscribe(session_id, subscriber)


SSE = Content("text/event-stream", obj({"id": STRING, "event": STRING, "data": STRING},
                                       "event", "data"))
"""Each event of the stream: its id, its name and its JSON payload (as text)."""
CONTENT_BLOCK = obj({"type": {"type": "string", "enum": ["text", "image", "document"]},
                     "text": STRING, "source": {"type": "object"}}, "type")
MESSAGE_BODY = obj({
    "content": {"anyOf": [{"type": "string", "minLength": 1},
                          {"type": "array", "items": CONTENT_BLOCK, "minItems": 1,
                           "maxItems": MAX_BLOCKS}]},
    "maxBudgetUsd": {"type": "number", "exclusiveMinimum": 0},
    "effort": {"type": "string", "enum": list(EFFORTS)},
    "thinking": obj({"type": {"type": "string", "enum": list(THINKING_TYPES)},
                     "budgetTokens": INTEGER}, "type"),
    "outputFormat": obj({"type": {"type": "string", "const": "json_schema"},
                         "schema": {"type": "object"}}, "type", "schema"),
    "options": {"type": "object"},
    "model": {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_NAME},
    "maxTurns": INTEGER,
    events.INCLUDE_PARTIAL_MESSAGES: BOOLEAN,
    "onDisconnect": {"type": "string", "enum": list(ON_DISCONNECT)},
}, "content")

MESSAGE = obj({
    "id": {"type": "string", "format": "uuid"},
    "sessionId": STRING,
    "tenantId": STRING,
    "role": {"type": "string", "enum": ["user", "assistant"]},
    "content": STRING,
    "sequence": INTEGER,
    "createdAt": ISO_TIME,
}, "id", "sessionId", "tenantId", "role", "content", "sequence", "createdAt")
"""A message of the conversation; `content` is the SDK message as JSON text."""

OPERATIONS = [
    Operation("POST", "/api/sessions/{id}/messages", send_message,
              "Send a message; the turn streams back as Server-Sent Events", {200: SSE},
              body=MESSAGE_BODY),
    Operation("GET", "/api/sessions/{id}/messages", list_messages,
              "The conversation: each user message and the agent's complete messages "
              "(assistant, result), oldest first",
              {200: obj({"messages": array(MESSAGE)}, "messages")},
              query=(Param("after", {"type": "integer", "minimum": 0},
                           "only messages after this sequence number"),
                     Param("limit", {"type": "integer", "minimum": 1,
                                     "maximum": MAX_MESSAGES_LIMIT}))),
    Operation("GET", "/api/sessions/{id}/stream", stream_session_events,
              "Rejoin the session's event stream after Last-Event-ID (or ?after=)", {200: SSE},
              query=(Param("after", {"type": "integer", "minimum": 0}),)),
]
