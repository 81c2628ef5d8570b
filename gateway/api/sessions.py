"""`/api/sessions`: create (with the session's options), list, get, end; its config (PATCH);
pause, resume, stop, interrupt, fork; exec."""

from __future__ import annotations

from typing import Any

from gateway import agents
from gateway.api.operation import Handler, Operation, Param
from gateway.api.schemas import (
    BOOLEAN,
    INTEGER,
    SESSION_CONFIG_FIELDS,
    SESSION_RESPONSE,
    SESSION_STATUS,
    STRING,
    array,
    nullable,
    obj,
    ref,
)
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response, string_field
from gateway.params import int_param, number_value
from gateway.sessions import session_json
from gateway.store import SessionRow
from wire.session_config import FIELDS, PATCHABLE, ConfigError, check_config

SESSION_STATUSES = tuple(SESSION_STATUS["enum"])
DEFAULT_EXEC_TIMEOUT_MS = 30_000
MAX_EXEC_TIMEOUT_MS = 300_000
"""exec `timeout` in milliseconds, 1 to 300000, as the reference's clients send it."""
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
MAX_LIST_OFFSET = 2**31 - 1


def _create_config(body: dict[str, Any]) -> dict[str, Any]:
    """The session options given beside `agent`, checked; other fields, and options given
    as `null` (a client's "not set"), are ignored."""
    if body.get("credentialId") is not None:
        raise ApiError(400, "`credentialId`: this gateway stores no credentials yet, so "
                            "none can be found; the model key is the runner's (see "
                            "docs/compat.md)")
    try:
        return check_config({name: body[name] for name in FIELDS
                             if body.get(name) is not None})
    except ConfigError as exc:
        raise ApiError(400, str(exc)) from None


async def create_session(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    name = agents.validate_agent_name(string_field(body, "agent") or "")
    config = _create_config(body)
    row, notice = await gw.sessions.create(name, config, req.tenant_id)
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


def _reply(row: SessionRow, status: int = 200) -> Response:
    return json_response({"session": session_json(row)}, status)


async def get_session(gw: Gateway, req: Request) -> Response:
    return _reply(gw.sessions.get(req.path_params["id"]))


async def end_session(gw: Gateway, req: Request) -> Response:
    return _reply(await gw.sessions.end(req.path_params["id"]))


async def pause_session(gw: Gateway, req: Request) -> Response:
    return _reply(await gw.sessions.pause(req.path_params["id"]))


async def resume_session(gw: Gateway, req: Request) -> Response:
    return _reply(await gw.sessions.resume(req.path_params["id"]))


async def interrupt_session(gw: Gateway, req: Request) -> Response:
    return _reply(await gw.sessions.interrupt(req.path_params["id"]))


async def stop_session(gw: Gateway, req: Request) -> Response:
    return _reply(await gw.sessions.stop(req.path_params["id"]))


async def update_session_config(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    return _reply(gw.sessions.update_config(req.path_params["id"], body))


async def fork_session(gw: Gateway, req: Request) -> Response:
    return _reply(await gw.sessions.fork(req.path_params["id"]), 201)


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


CREATE_BODY = obj({"agent": STRING, **SESSION_CONFIG_FIELDS}, "agent")
CONFIG_PATCH_BODY = obj({name: nullable(SESSION_CONFIG_FIELDS[name]) for name in PATCHABLE})
"""A field given replaces the session's, `null` removes it."""
EXEC_BODY = obj({"command": STRING,
                 "timeout": {"type": "integer", "minimum": 1, "maximum": MAX_EXEC_TIMEOUT_MS}},
                "command")
EXEC_RESPONSE = obj({"exitCode": INTEGER, "stdout": STRING, "stderr": STRING,
                     "truncated": BOOLEAN, "timedOut": BOOLEAN},
                    "exitCode", "stdout", "stderr")
LIST_QUERY = (
    Param("agent", STRING, "only this agent's sessions"),
    Param("status", SESSION_STATUS),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}),
    Param("offset", {"type": "integer", "minimum": 0, "maximum": MAX_LIST_OFFSET}),
)
CREATED = obj({"session": ref("Session"), "notice": STRING}, "session")


def _lifecycle(method: str, verb: str, handler: Handler, summary: str,
               status: int = 200) -> Operation:
    return Operation(method, f"/api/sessions/{{id}}{verb}", handler, summary,
                     {status: SESSION_RESPONSE})


OPERATIONS = [
    Operation("POST", "/api/sessions", create_session, "Create a session", {201: CREATED},
              body=CREATE_BODY),
    Operation("GET", "/api/sessions", list_sessions, "List sessions, newest first",
              {200: obj({"sessions": array(ref("Session"))}, "sessions")}, query=LIST_QUERY),
    _lifecycle("GET", "", get_session, "Get a session"),
    _lifecycle("DELETE", "", end_session, "End a session (its state is dropped)"),
    _lifecycle("POST", "/pause", pause_session, "Pause a session (state kept)"),
    _lifecycle("POST", "/resume", resume_session, "Resume a paused or stopped session"),
    _lifecycle("POST", "/interrupt", interrupt_session, "Interrupt the running turn"),
    _lifecycle("POST", "/stop", stop_session, "Stop: the sandbox goes, the state stays"),
    Operation("PATCH", "/api/sessions/{id}/config", update_session_config,
              "Change the session's options (patch merge); the next turn uses them",
              {200: SESSION_RESPONSE}, body=CONFIG_PATCH_BODY),
    _lifecycle("POST", "/fork", fork_session,
               "Fork: a new session with the conversation and workspace", 201),
    Operation("POST", "/api/sessions/{id}/exec", exec_in_session,
              "Run a command in the session's sandbox", {200: EXEC_RESPONSE}, body=EXEC_BODY),
]
