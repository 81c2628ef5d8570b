"""`/api/queue`: enqueue a prompt for an agent (in a new session, or one given), list, count
by status, show, cancel while pending. The workers are `gateway.queue`'s."""

from __future__ import annotations

from typing import Any

from gateway import agents
from gateway.api.operation import Operation, Param
from gateway.api.schemas import INTEGER, ISO_TIME, STRING, array, envelope, nullable, obj
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response, string_field
from gateway.params import int_param, number_value
from gateway.queue import STATUSES, item_json
from wire.content import MAX_TEXT_CHARS

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500
MIN_PRIORITY, MAX_PRIORITY = -1_000_000, 1_000_000
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES = 20
QUEUE_MAX_BODY = 4 * 1024 * 1024
"""Room for a prompt of MAX_TEXT_CHARS characters, each escaped in JSON (`\\uXXXX`)."""


def _prompt(body: dict[str, Any]) -> str:
    prompt = string_field(body, "prompt") or ""
    if len(prompt) > MAX_TEXT_CHARS:
        raise ApiError(400, f"`prompt` exceeds {MAX_TEXT_CHARS} characters")
    return prompt


def _session_id(gw: Gateway, req: Request, body: dict[str, Any],
                agent_name: str) -> str | None:
    """The given session, which must be live and the agent's (a foreign id is unknown)."""
    session_id = string_field(body, "sessionId", required=False)
    if session_id is None:
        return None
    session = gw.sessions.get_live(session_id, req.tenant_id)
    if session.agent != agent_name:
        raise ApiError(400, f"session {session_id} is agent {session.agent}'s, "
                            f"not {agent_name}'s")
    return session.id


async def enqueue(gw: Gateway, req: Request) -> Response:
    body = await req.json_object(QUEUE_MAX_BODY)
    agent_name = agents.validate_agent_name(string_field(body, "agentName") or "")
    prompt = _prompt(body)
    priority = int(number_value(body.get("priority", 0), "`priority`", low=MIN_PRIORITY,
                                high=MAX_PRIORITY, integer=True))
    max_retries = int(number_value(body.get("maxRetries", DEFAULT_MAX_RETRIES),
                                   "`maxRetries`", low=0, high=MAX_RETRIES, integer=True))
    if gw.store.get_agent(agent_name, req.tenant_id) is None:
        raise ApiError(404, f"agent not found: {agent_name}")
    session_id = _session_id(gw, req, body, agent_name)
    row = gw.queue.enqueue(req.tenant_id, agent_name, prompt, session_id, priority,
                           max_retries)
    return json_response({"item": item_json(row)}, 201)


async def list_items(gw: Gateway, req: Request) -> Response:
    params = req.query()
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"`status` must be one of {', '.join(STATUSES)}")
    limit = int_param(params, "limit", DEFAULT_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
    rows = gw.store.list_queue_items(req.tenant_id, status, limit)
    return json_response({"items": [item_json(row) for row in rows]})


async def queue_stats(gw: Gateway, req: Request) -> Response:
    counts = gw.store.count_queue_items_by_status(req.tenant_id)
    return json_response({"stats": {status: counts.get(status, 0) for status in STATUSES}})


def _item(gw: Gateway, req: Request) -> Any:
    row = gw.store.get_queue_item(req.tenant_id, req.path_params["id"])
    if row is None:
        raise ApiError(404, f"queue item not found: {req.path_params['id']}")
    return row


async def get_item(gw: Gateway, req: Request) -> Response:
    return json_response({"item": item_json(_item(gw, req))})


async def cancel_item(gw: Gateway, req: Request) -> Response:
    row = _item(gw, req)
    cancelled = gw.store.cancel_queue_item(req.tenant_id, row.id)
    if cancelled is None:
        raise ApiError(409, f"queue item is {row.status}; only a pending item can be cancelled")
    return json_response({"item": item_json(cancelled)})


STATUS: dict[str, Any] = {"type": "string", "enum": list(STATUSES)}
QUEUE_ITEM = obj({
    "id": STRING,
    "tenantId": STRING,
    "sessionId": nullable(STRING),
    "agentName": STRING,
    "prompt": STRING,
    "status": STATUS,
    "priority": INTEGER,
    "retryCount": INTEGER,
    "maxRetries": INTEGER,
    "error": nullable(STRING),
    "createdAt": ISO_TIME,
    "startedAt": nullable(ISO_TIME),
    "completedAt": nullable(ISO_TIME),
    "nextAttemptAt": ISO_TIME,
}, "id", "tenantId", "sessionId", "agentName", "prompt", "status", "priority", "retryCount",
    "maxRetries", "error", "createdAt", "startedAt", "completedAt")
ITEM_RESPONSE = envelope("item", QUEUE_ITEM)
ENQUEUE_BODY = obj({
    "agentName": {"type": "string", "minLength": 1, "maxLength": 64},
    "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
    "sessionId": nullable(STRING),
    "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
    "maxRetries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
}, "agentName", "prompt")
STATS = obj({status: INTEGER for status in STATUSES}, *STATUSES)

OPERATIONS = [
    Operation("POST", "/api/queue", enqueue,
              "Queue a prompt for an agent: run as a turn of the given session, or of a new "
              "one, retried with backoff", {201: ITEM_RESPONSE}, body=ENQUEUE_BODY),
    Operation("GET", "/api/queue", list_items, "List queue items, newest first",
              {200: obj({"items": array(QUEUE_ITEM)}, "items")},
              query=(Param("status", STATUS),
                     Param("limit", {"type": "integer", "minimum": 1,
                                     "maximum": MAX_LIST_LIMIT}))),
    Operation("GET", "/api/queue/stats", queue_stats, "Count queue items by status",
              {200: envelope("stats", STATS)}),
    Operation("GET", "/api/queue/{id}", get_item, "Get a queue item", {200: ITEM_RESPONSE}),
    Operation("DELETE", "/api/queue/{id}", cancel_item,
              "Cancel a queue item (only while pending; 409 otherwise)", {200: ITEM_RESPONSE}),
]
