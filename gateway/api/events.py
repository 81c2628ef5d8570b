"""`GET /api/sessions/{id}/events`: the session's logged events."""

from __future__ import annotations

from gateway.api.operation import Operation, Param
from gateway.api.schemas import INTEGER, STRING, array, obj
from gateway.context import Gateway
from gateway.http import Request, Response
from gateway.params import INT64_MAX, int_param

DEFAULT_EVENTS_LIMIT = 1000
MAX_EVENTS_LIMIT = 10_000


async def session_events(gw: Gateway, req: Request) -> Response:
    params = req.query()
    after = int_param(params, "after", 0, low=0, high=INT64_MAX)
    limit = int_param(params, "limit", DEFAULT_EVENTS_LIMIT, low=1, high=MAX_EVENTS_LIMIT)
    return Response(200, gw.sessions.events_after(req.path_params["id"], after, limit))


LOGGED_EVENT = obj({"id": INTEGER, "type": STRING, "data": {}}, "id", "type", "data")

OPERATIONS = [
    Operation("GET", "/api/sessions/{id}/events", session_events,
              "The session's logged events after `after`",
              {200: obj({"events": array(LOGGED_EVENT)}, "events")},
              query=(Param("after", {"type": "integer", "minimum": 0}),
                     Param("limit", {"type": "integer", "minimum": 1,
                                     "maximum": MAX_EVENTS_LIMIT}))),
]
