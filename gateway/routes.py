"""The REST API: one small handler per route, and the route table.

A handler gets the `Gateway` (what the app owns) and the `Request`; it returns
a `Response`, or `None` when it has streamed its own response.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import agents, files, runner_routes
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response, string_field
from gateway.params import INT64_MAX, int_param, number_value, parse_int
from gateway.sessions import session_json
from gateway.sse_stream import SseWriter, stream_session
from gateway.store import AgentRow
from runner import timing
from runner.timing import TIMING
from wire import events
from wire import timing as wt
from wire.options import MAX_MODEL_NAME, NUMERIC_OPTIONS

SESSION_STATUSES = ("starting", "active", "paused", "stopped", "error", "ended")
DEFAULT_EXEC_TIMEOUT_MS = 30_000
MAX_EXEC_TIMEOUT_MS = 300_000
"""exec `timeout` in milliseconds, 1 to 300000, as the reference's clients send it."""
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
MAX_LIST_OFFSET = 2**31 - 1
DEFAULT_EVENTS_LIMIT = 1000
MAX_EVENTS_LIMIT = 10_000
TOP_LEVEL_OPTIONS = ("model", "maxTurns", events.INCLUDE_PARTIAL_MESSAGES)
"""Options a reference client sends beside `content` rather than inside `options`."""


COORDINATOR_ID = f"{socket.gethostname()}-{os.getpid()}"
"""Which gateway process answered (the reference's `coordinatorId`: host and pid)."""
try:
    GATEWAY_VERSION = importlib.metadata.version("ash-gateway")
except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
    GATEWAY_VERSION = "0+unknown"

Handler = Callable[[Gateway, Request], Awaitable[Response | None]]


# health


async def health(gw: Gateway, req: Request) -> Response:
    """The reference's health fields (`activeSessions`, `uptime` in whole seconds,
    `pool{…}`, …) and ours beside them (`mode`, `uptimeSeconds`, `sessions`, …)."""
    stats = gw.backend.stats()
    sessions = gw.store.count_sessions_by_status()
    uptime = time.time() - gw.started_at
    pool = stats.pool
    warm, warming = (pool.ready, pool.starting) if pool is not None else (0, 0)
    return json_response({
        "status": "ok",
        "version": GATEWAY_VERSION,
        "coordinatorId": COORDINATOR_ID,
        "activeSessions": sessions.get("active", 0),
        "activeSandboxes": stats.sandboxes,
        "remoteRunners": len(gw.store.list_runners()),
        "uptime": int(uptime),
        "pool": {
            "total": stats.sandboxes + warm + warming,
            "cold": 0,
            "warming": warming,
            "warm": warm,
            "waiting": stats.sandboxes - stats.busy,
            "running": stats.busy,
            "maxCapacity": stats.capacity,
            "resumeWarmHits": gw.sessions.resume_warm_hits,
            "resumeColdHits": gw.sessions.resume_cold_hits,
            "preWarmHits": pool.served if pool is not None else 0,
        },
        "mode": gw.mode,
        "uptimeSeconds": round(uptime, 3),
        "sessions": sessions,
        "sandboxes": {"live": stats.sandboxes, "busy": stats.busy},
        **({"warmPool": {"size": pool.size, "ready": pool.ready,
                         "starting": pool.starting, "served": pool.served}}
           if pool is not None else {}),
        **({"sandbox": gw.sandbox} if gw.sandbox is not None else {}),
    })


# agents


async def deploy_agent(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    name = agents.validate_agent_name(string_field(body, "name") or "")
    source = Path(string_field(body, "path") or "")
    config = agents.check_agent_folder(source)
    target = await asyncio.to_thread(agents.copy_agent_folder, source, gw.agents_dir, name)
    row = agents.record_agent(gw.store, name, target, config)
    return json_response({"agent": agents.agent_json(row)}, 201)


async def list_agents(gw: Gateway, req: Request) -> Response:
    return json_response({"agents": [agents.agent_json(row) for row in gw.store.list_agents()]})


def _agent_row(gw: Gateway, req: Request) -> AgentRow:
    name = agents.validate_agent_name(req.path_params["name"])
    row = gw.store.get_agent(name)
    if row is None:
        raise ApiError(404, f"agent not found: {name}")
    return row


async def get_agent(gw: Gateway, req: Request) -> Response:
    return json_response({"agent": agents.agent_json(_agent_row(gw, req))})


async def delete_agent(gw: Gateway, req: Request) -> Response:
    row = _agent_row(gw, req)
    live = gw.store.count_live_sessions_of_agent(row.name)
    if live:
        raise ApiError(409, f"agent {row.name} has {live} live session(s); end them first")
    gw.store.delete_agent(row.name)
    await asyncio.to_thread(agents.remove_agent_folder, gw.agents_dir, row.name)
    return json_response({"agent": agents.agent_json(row), "deleted": True})


# sessions


async def create_session(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    name = agents.validate_agent_name(string_field(body, "agent") or "")
    row, notice = await gw.sessions.create(name)
    body = {"session": session_json(row)}
    if notice:
        body["notice"] = notice
    return json_response(body, 201)


async def list_sessions(gw: Gateway, req: Request) -> Response:
    params = req.query()
    status = params.get("status")
    if status is not None and status not in SESSION_STATUSES:
        raise ApiError(400, f"`status` must be one of {', '.join(SESSION_STATUSES)}")
    rows = gw.store.list_sessions(
        agent=params.get("agent"),
        status=status,
        limit=int_param(params, "limit", DEFAULT_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT),
        offset=int_param(params, "offset", 0, low=0, high=MAX_LIST_OFFSET),
    )
    return json_response({"sessions": [session_json(row) for row in rows]})


async def get_session(gw: Gateway, req: Request) -> Response:
    return json_response({"session": session_json(gw.sessions.get(req.path_params["id"]))})


async def end_session(gw: Gateway, req: Request) -> Response:
    return json_response({"session": session_json(await gw.sessions.end(req.path_params["id"]))})


async def pause_session(gw: Gateway, req: Request) -> Response:
    row = await gw.sessions.pause(req.path_params["id"])
    return json_response({"session": session_json(row)})


async def resume_session(gw: Gateway, req: Request) -> Response:
    row = await gw.sessions.resume(req.path_params["id"])
    return json_response({"session": session_json(row)})


async def interrupt_session(gw: Gateway, req: Request) -> Response:
    row = await gw.sessions.interrupt(req.path_params["id"])
    return json_response({"session": session_json(row)})


async def exec_in_session(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    command = string_field(body, "command") or ""
    timeout_ms = number_value(body.get("timeout", DEFAULT_EXEC_TIMEOUT_MS), "`timeout`", low=1,
                              high=MAX_EXEC_TIMEOUT_MS, integer=True, unit="milliseconds")
    result = await gw.sessions.exec(req.path_params["id"], command, timeout_ms / 1000)
    return json_response({
        "exitCode": result.exit_code,
        "stdout": result.stdout.decode("utf-8", "replace"),
        "stderr": result.stderr.decode("utf-8", "replace"),
        "truncated": result.truncated,
        "timedOut": result.timed_out,
    })


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


ON_DISCONNECT = ("continue", "interrupt")


async def send_message(gw: Gateway, req: Request) -> None:
    turn_id = timing.request_in(req.header(wt.TURN_HEADER), req.path_params["id"]) if TIMING else ""
    body = await req.json_object()
    content = string_field(body, "content") or ""
    options = _message_options(body)
    on_disconnect = body.get("onDisconnect", "continue")
    if on_disconnect not in ON_DISCONNECT:
        raise ApiError(400, "`onDisconnect` must be \"continue\" or \"interrupt\"")
    row = await gw.sessions.begin_turn(req.path_params["id"])
    if TIMING:
        timing.point(wt.GATEWAY_SESSION_FOUND, turn_id, row.id)
    subscriber = gw.sessions.feeds.subscribe(row.id)
    writer = SseWriter(req, gw.stream_settings)
    try:
        await writer.start()
    except BaseException:
        gw.sessions.feeds.unsubscribe(row.id, subscriber)
        gw.sessions.abandon_turn(row.id)
        raise
    gw.sessions.start_turn(row, content, options, turn_id)

    def interrupt() -> None:
        asyncio.get_running_loop().create_task(gw.sessions.interrupt(row.id))

    try:
        await stream_session(
            writer, subscriber, session_id=row.id, until_done=True,
            on_disconnect=interrupt if on_disconnect == "interrupt" else None, turn_id=turn_id,
        )
    finally:
        gw.sessions.feeds.unsubscribe(row.id, subscriber)


def _last_event_id(req: Request) -> int:
    """The id to resume after: the Last-Event-ID header, else `?after=`, else 0."""
    header = req.header(b"last-event-id")
    if header is not None:
        return parse_int(header, "Last-Event-ID (an event id)", low=0, high=INT64_MAX)
    return int_param(req.query(), "after", 0, low=0, high=INT64_MAX)


async def stream_session_events(gw: Gateway, req: Request) -> None:
    """Replay what came after Last-Event-ID (or ?after=N), then stay live across turns."""
    session_id = req.path_params["id"]
    after = _last_event_id(req)
    gw.sessions.get(session_id)
    writer = SseWriter(req, gw.stream_settings)
    subscriber, logged = gw.sessions.subscribe_from(session_id, after)
    try:
        await writer.start()
        await stream_session(
            writer, subscriber, store=gw.store, session_id=session_id,
            replay_after=after, replay_until=logged, until_done=False,
        )
    finally:
        gw.sessions.feeds.unsubscribe(session_id, subscriber)


async def session_events(gw: Gateway, req: Request) -> Response:
    params = req.query()
    after = int_param(params, "after", 0, low=0, high=INT64_MAX)
    limit = int_param(params, "limit", DEFAULT_EVENTS_LIMIT, low=1, high=MAX_EVENTS_LIMIT)
    return Response(200, gw.sessions.events_after(req.path_params["id"], after, limit))


async def stop_session(gw: Gateway, req: Request) -> Response:
    row = await gw.sessions.stop(req.path_params["id"])
    return json_response({"session": session_json(row)})


async def fork_session(gw: Gateway, req: Request) -> Response:
    row = await gw.sessions.fork(req.path_params["id"])
    return json_response({"session": session_json(row)}, 201)


ROUTES: list[tuple[str, str, Handler]] = [
    # (method, path pattern, handler); every /api/ path requires the API key
    ("GET", r"/health", health),
    ("POST", r"/api/agents", deploy_agent),
    ("GET", r"/api/agents", list_agents),
    ("GET", r"/api/agents/(?P<name>[^/]+)", get_agent),
    ("DELETE", r"/api/agents/(?P<name>[^/]+)", delete_agent),
    ("POST", r"/api/sessions", create_session),
    ("GET", r"/api/sessions", list_sessions),
    ("GET", r"/api/sessions/(?P<id>[^/]+)", get_session),
    ("DELETE", r"/api/sessions/(?P<id>[^/]+)", end_session),
    ("POST", r"/api/sessions/(?P<id>[^/]+)/messages", send_message),
    ("GET", r"/api/sessions/(?P<id>[^/]+)/events", session_events),
    ("GET", r"/api/sessions/(?P<id>[^/]+)/stream", stream_session_events),
    ("POST", r"/api/sessions/(?P<id>[^/]+)/pause", pause_session),
    ("POST", r"/api/sessions/(?P<id>[^/]+)/resume", resume_session),
    ("POST", r"/api/sessions/(?P<id>[^/]+)/interrupt", interrupt_session),
    ("POST", r"/api/sessions/(?P<id>[^/]+)/exec", exec_in_session),
    *runner_routes.ROUTES,
    ("POST", r"/api/sessions/(?P<id>[^/]+)/stop", stop_session),
    ("POST", r"/api/sessions/(?P<id>[^/]+)/fork", fork_session),
    *files.ROUTES,
]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def compile_routes() -> list[Route]:
    return [Route(method, re.compile(pattern), handler) for method, pattern, handler in ROUTES]
