"""`GET /api/sessions/{id}/events`: the session's timeline, as the reference's clients read
it (`gateway.conversation`), and `GET /api/sessions/{id}/stream/events`: the stream itself,
every logged event as it went out (what a client replays or audits)."""

from __future__ import annotations

from gateway import conversation
from gateway.api.operation import Operation, Param
from gateway.api.schemas import INTEGER, ISO_TIME, STRING, array, nullable, obj
from gateway.api.sessions import session_of
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response
from gateway.params import INT64_MAX, int_param

DEFAULT_STREAM_LIMIT = 1000
MAX_STREAM_LIMIT = 10_000
DEFAULT_TIMELINE_LIMIT = 200
MAX_TIMELINE_LIMIT = 1000


async def session_timeline(gw: Gateway, req: Request) -> Response:
    params = req.query()
    after = int_param(params, "after", 0, low=0, high=INT64_MAX)
    limit = int_param(params, "limit", DEFAULT_TIMELINE_LIMIT, low=1, high=MAX_TIMELINE_LIMIT)
    only = params.get("type")
    if only is not None and only not in conversation.TIMELINE_TYPES:
        raise ApiError(400, f"`type` must be one of {', '.join(conversation.TIMELINE_TYPES)}")
    session = session_of(gw, req)
    gw.sessions.event_log.flush()
    rows = conversation.timeline(gw.store, session, after, limit, only)
    return json_response({"events": rows})


async def session_stream_events(gw: Gateway, req: Request) -> Response:
    params = req.query()
    after = int_param(params, "after", 0, low=0, high=INT64_MAX)
    limit = int_param(params, "limit", DEFAULT_STREAM_LIMIT, low=1, high=MAX_STREAM_LIMIT)
    return Response(200, gw.sessions.events_after(session_of(gw, req).id, after, limit))


LOGGED_EVENT = obj({"id": INTEGER, "type": STRING, "data": {}}, "id", "type", "data")
TIMELINE_EVENT = obj({
    "id": {"type": "string", "format": "uuid"},
    "sessionId": STRING,
    "tenantId": STRING,
    "type": {"type": "string", "enum": list(conversation.TIMELINE_TYPES)},
    "data": nullable(STRING),
    "sequence": INTEGER,
    "createdAt": ISO_TIME,
}, "id", "sessionId", "tenantId", "type", "data", "sequence", "createdAt")
AFTER = Param("after", {"type": "integer", "minimum": 0},
              "only what comes after this sequence number")

OPERATIONS = [
    Operation("GET", "/api/sessions/{id}/events", session_timeline,
              "The session's timeline: text, tool calls and results, reasoning, errors, "
              "turn ends and lifecycle, classified from its complete messages",
              {200: obj({"events": array(TIMELINE_EVENT)}, "events")},
              query=(AFTER,
                     Param("limit", {"type": "integer", "minimum": 1,
                                     "maximum": MAX_TIMELINE_LIMIT}),
                     Param("type", {"type": "string",
                                    "enum": list(conversation.TIMELINE_TYPES)}))),
    Operation("GET", "/api/sessions/{id}/stream/events", session_stream_events,
              "The session's logged stream events after `after` (every SSE event, deltas "
              "included, by id)",
              {200: obj({"events": array(LOGGED_EVENT)}, "events")},
              query=(Param("after", {"type": "integer", "minimum": 0}),
                     Param("limit", {"type": "integer", "minimum": 1,
                                     "maximum": MAX_STREAM_LIMIT}))),
]
