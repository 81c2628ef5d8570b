"""`GET /api/usage`, `/api/usage/stats` and `/api/analytics`: the tenant's metered usage
(`gateway.usage`: recorded once per finished turn), listed, summed, and beside its agent
and session counts, in the reference's shapes."""

from __future__ import annotations

from typing import Any

from gateway.api.operation import Operation, Param
from gateway.api.schemas import INTEGER, ISO_TIME, NUMBER, STRING, array, obj
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response
from gateway.params import int_param
from gateway.store import UsageFilter, UsageRow
from gateway.timestamps import iso_utc, parse_iso
from gateway.usage import EVENT_TYPES, STATS_FIELDS, stats_json

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_FILTER_LENGTH = 256


def _time(params: dict[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    moment = parse_iso(raw)
    if moment is None:
        raise ApiError(400, f"`{name}` must be an ISO-8601 date-time "
                            "(e.g. 2026-01-02T03:04:05Z)")
    return moment


def _text(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not 0 < len(value) <= MAX_FILTER_LENGTH:
        raise ApiError(400, f"`{name}` must be 1 to {MAX_FILTER_LENGTH} characters")
    return value


def _filter(req: Request, *, by_session: bool = True) -> UsageFilter:
    params = req.query()
    return UsageFilter(
        tenant_id=req.tenant_id,
        session_id=_text(params, "sessionId") if by_session else None,
        agent_name=_text(params, "agentName") if by_session else None,
        after=_time(params, "after"),
        before=_time(params, "before"),
    )


def usage_event_json(row: UsageRow) -> dict[str, Any]:
    return {"id": row.id, "sessionId": row.session_id, "agentName": row.agent_name,
            "eventType": row.event_type, "value": row.value,
            "createdAt": iso_utc(row.created_at)}


async def list_usage(gw: Gateway, req: Request) -> Response:
    where = _filter(req)
    limit = int_param(req.query(), "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    gw.event_log.flush()
    return json_response({"events": [usage_event_json(row)
                                     for row in gw.store.list_usage(where, limit)]})


async def usage_stats(gw: Gateway, req: Request) -> Response:
    where = _filter(req)
    gw.event_log.flush()
    return json_response({"stats": stats_json(gw.store.usage_totals(where))})


async def analytics(gw: Gateway, req: Request) -> Response:
    """The tenant's agents and sessions (all of them, as the reference counts) and its
    usage between `after` and `before`. No evals exist here: their counts are zero."""
    where = _filter(req, by_session=False)
    gw.event_log.flush()
    by_status = gw.store.count_sessions_by_status(req.tenant_id)
    return json_response({
        "agents": {"total": len(gw.store.list_agents(req.tenant_id))},
        "sessions": {"total": sum(by_status.values()), "byStatus": by_status},
        "usage": stats_json(gw.store.usage_totals(where)),
        "evals": {"totalRuns": 0, "byStatus": {}},
    })


USAGE_EVENT = obj({
    "id": {"type": "string", "format": "uuid"},
    "sessionId": STRING,
    "agentName": STRING,
    "eventType": {"type": "string", "enum": list(EVENT_TYPES)},
    "value": NUMBER,
    "createdAt": ISO_TIME,
}, "id", "sessionId", "agentName", "eventType", "value", "createdAt")
USAGE_STATS = obj({name: NUMBER for name in STATS_FIELDS}, *STATS_FIELDS)
COUNTS = {"type": "object", "additionalProperties": INTEGER}
TIME_RANGE = (
    Param("after", {"type": "string", "format": "date-time"},
          "only usage recorded after this ISO-8601 time"),
    Param("before", {"type": "string", "format": "date-time"},
          "only usage recorded before this ISO-8601 time"),
)
FILTERS = (
    Param("sessionId", {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_LENGTH}),
    Param("agentName", {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_LENGTH}),
    *TIME_RANGE,
)

OPERATIONS = [
    Operation("GET", "/api/usage", list_usage,
              "Usage events (a turn's tokens, tool calls, message and compute seconds), "
              "newest first",
              {200: obj({"events": array(USAGE_EVENT)}, "events")},
              query=(*FILTERS, Param("limit", {"type": "integer", "minimum": 1,
                                               "maximum": MAX_LIMIT}))),
    Operation("GET", "/api/usage/stats", usage_stats, "Usage totals",
              {200: obj({"stats": USAGE_STATS}, "stats")}, query=FILTERS),
    Operation("GET", "/api/analytics", analytics,
              "Agent and session counts beside the usage totals",
              {200: obj({
                  "agents": obj({"total": INTEGER}, "total"),
                  "sessions": obj({"total": INTEGER, "byStatus": COUNTS}, "total", "byStatus"),
                  "usage": USAGE_STATS,
                  "evals": obj({"totalRuns": INTEGER, "byStatus": COUNTS},
                               "totalRuns", "byStatus"),
              }, "agents", "sessions", "usage", "evals")},
              query=TIME_RANGE),
]
