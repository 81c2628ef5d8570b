"""`/api/agents/{name}/versions`: an agent's numbered versions (a name, a system prompt,
release notes, knowledge file names), and which one is active.

The active version's `systemPrompt` is what a new session of the agent runs, in place of
CLAUDE.md (`SessionService.create` pins it in the session's config, so a later activation
changes new sessions only); a session created with its own `systemPrompt` keeps that one.
A version without a prompt (null) leaves CLAUDE.md in force. The active version cannot be
deleted (409): activate another first.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.api.agents import agent_row
from gateway.api.operation import Operation
from gateway.api.schemas import (
    BOOLEAN,
    INTEGER,
    array,
    envelope,
    nullable,
    obj,
    ref,
)
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response
from gateway.params import INT64_MAX, number_value, parse_int
from gateway.store import AgentVersionRow
from gateway.timestamps import iso_utc
from wire.session_config import MAX_SYSTEM_PROMPT

MAX_NAME = 255
MAX_RELEASE_NOTES = 100_000
MAX_KNOWLEDGE_FILES = 1000
MAX_KNOWLEDGE_PATH = 1024
TEXT_COLUMNS = {"name": "name", "systemPrompt": "system_prompt",
                "releaseNotes": "release_notes"}
LIMITS = {"name": MAX_NAME, "systemPrompt": MAX_SYSTEM_PROMPT,
          "releaseNotes": MAX_RELEASE_NOTES}
"""A system prompt fits what a session's own `systemPrompt` may be, since it becomes one."""
FIELDS = (*TEXT_COLUMNS, "knowledgeFiles")


def version_json(row: AgentVersionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenantId": row.tenant_id,
        "agentName": row.agent_name,
        "versionNumber": row.version_number,
        "name": row.name,
        "systemPrompt": row.system_prompt,
        "releaseNotes": row.release_notes,
        "isActive": bool(row.is_active),
        "knowledgeFiles": (None if row.knowledge_files is None
                           else orjson.loads(row.knowledge_files)),
        "createdBy": row.created_by,
        "createdAt": iso_utc(row.created_at),
        "updatedAt": iso_utc(row.updated_at),
    }


def _text(body: dict[str, Any], field: str) -> str | None:
    value = body[field]
    if value is None:
        if field == "name":
            raise ApiError(400, "`name` must be a string")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"`{field}` must be a string")
    if len(value) > LIMITS[field]:
        raise ApiError(400, f"`{field}` is longer than {LIMITS[field]} characters")
    if field == "name" and not value.strip():
        raise ApiError(400, "`name` must not be empty")
    return value


def _knowledge_files(value: Any) -> str | None:
    """The names as stored (a JSON array), or None."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and item
                                              for item in value):
        raise ApiError(400, "`knowledgeFiles` must be an array of non-empty strings")
    if len(value) > MAX_KNOWLEDGE_FILES:
        raise ApiError(400, f"`knowledgeFiles` holds more than {MAX_KNOWLEDGE_FILES} names")
    if any(len(item) > MAX_KNOWLEDGE_PATH for item in value):
        raise ApiError(400, f"a `knowledgeFiles` name is longer than {MAX_KNOWLEDGE_PATH} "
                            "characters")
    return orjson.dumps(value).decode()


def _fields(body: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The store columns the body sets, checked; unknown fields are a 400."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)} "
                            f"(expected {', '.join(allowed)})")
    fields: dict[str, Any] = {}
    for field in TEXT_COLUMNS:
        if field in body:
            fields[TEXT_COLUMNS[field]] = _text(body, field)
    if "knowledgeFiles" in body:
        fields["knowledge_files"] = _knowledge_files(body["knowledgeFiles"])
    return fields


def _number(req: Request) -> int:
    return parse_int(req.path_params["versionNumber"], "`versionNumber`", low=1,
                     high=INT64_MAX)


def _version(gw: Gateway, req: Request, agent: str) -> AgentVersionRow:
    number = _number(req)
    row = gw.store.get_agent_version(req.tenant_id, agent, number)
    if row is None:
        raise ApiError(404, f"version {number} of agent {agent} not found")
    return row


def _clone_source(gw: Gateway, req: Request, agent: str, value: Any) -> AgentVersionRow:
    """`cloneFrom`: a version number or a version id."""
    if isinstance(value, str):
        try:
            version_id = str(uuid.UUID(value))
        except ValueError:
            raise ApiError(400, "`cloneFrom` must be a version number or a version id "
                                "(a UUID)") from None
        row = gw.store.get_agent_version(req.tenant_id, agent, version_id=version_id)
    else:
        number = int(number_value(value, "`cloneFrom`", low=1, high=INT64_MAX, integer=True))
        row = gw.store.get_agent_version(req.tenant_id, agent, number)
    if row is None:
        raise ApiError(404, f"`cloneFrom`: no such version of agent {agent}: {value}")
    return row


async def create_version(gw: Gateway, req: Request) -> Response:
    """A new version, numbered after the last; `cloneFrom` copies another's prompt, notes
    and knowledge files (fields given in the body win). It is not active until activated."""
    agent = agent_row(gw, req).name
    body = await req.json_object()
    clone = body.pop("cloneFrom", None)
    fields = _fields(body, FIELDS)
    if clone is not None:
        source = _clone_source(gw, req, agent, clone)
        fields = {"system_prompt": source.system_prompt,
                  "release_notes": source.release_notes,
                  "knowledge_files": source.knowledge_files, **fields}
    row = gw.store.insert_agent_version(req.tenant_id, agent, fields)
    return json_response({"version": version_json(row)}, 201)


async def list_versions(gw: Gateway, req: Request) -> Response:
    agent = agent_row(gw, req).name
    rows = gw.store.list_agent_versions(req.tenant_id, agent)
    return json_response({"versions": [version_json(row) for row in rows]})


async def get_version(gw: Gateway, req: Request) -> Response:
    agent = agent_row(gw, req).name
    return json_response({"version": version_json(_version(gw, req, agent))})


async def patch_version(gw: Gateway, req: Request) -> Response:
    """Change a version's name, prompt, notes or knowledge files (null clears all but the
    name); an active version's new prompt is what the next new session runs."""
    agent = agent_row(gw, req).name
    number = _version(gw, req, agent).version_number
    fields = _fields(await req.json_object(), FIELDS)
    row = (gw.store.update_agent_version(req.tenant_id, agent, number, fields) if fields
           else gw.store.get_agent_version(req.tenant_id, agent, number))
    if row is None:
        raise ApiError(404, f"version {number} of agent {agent} not found")
    return json_response({"version": version_json(row)})


async def delete_version(gw: Gateway, req: Request) -> None:
    agent = agent_row(gw, req).name
    row = _version(gw, req, agent)
    if row.is_active:
        raise ApiError(409, f"version {row.version_number} is the active version of agent "
                            f"{agent}; activate another version before deleting it")
    gw.store.delete_agent_version(req.tenant_id, agent, row.version_number)
    # 204 carries neither a body nor a Content-Length (RFC 9110 §8.6)
    await req.send({"type": "http.response.start", "status": 204, "headers": []})
    await req.send({"type": "http.response.body", "body": b""})
    return None


async def activate_version(gw: Gateway, req: Request) -> Response:
    agent = agent_row(gw, req).name
    number = _version(gw, req, agent).version_number
    if not gw.store.activate_agent_version(req.tenant_id, agent, number):
        raise ApiError(404, f"version {number} of agent {agent} not found")
    return json_response({"activated": True, "versionNumber": number})


def _bounded(limit: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit}


KNOWLEDGE_FILES = {**array({"type": "string", "minLength": 1,
                            "maxLength": MAX_KNOWLEDGE_PATH}),
                   "maxItems": MAX_KNOWLEDGE_FILES}
NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": r"\S"}
EDITABLE = {
    "name": NAME,
    "systemPrompt": nullable(_bounded(MAX_SYSTEM_PROMPT)),
    "releaseNotes": nullable(_bounded(MAX_RELEASE_NOTES)),
    "knowledgeFiles": nullable(KNOWLEDGE_FILES),
}
CREATE_BODY = obj({
    **EDITABLE,
    "cloneFrom": nullable({"anyOf": [{"type": "integer", "minimum": 1, "maximum": INT64_MAX},
                                     {"type": "string", "format": "uuid"}]}),
}, extra=False)
PATCH_BODY = obj(EDITABLE, extra=False)
VERSION_RESPONSE = envelope("version", ref("AgentVersion"))
VERSION_PATH = "/api/agents/{name}/versions/{versionNumber}"

OPERATIONS = [
    Operation("POST", "/api/agents/{name}/versions", create_version,
              "Create an agent version (optionally cloned from another); not active until "
              "activated", {201: VERSION_RESPONSE}, body=CREATE_BODY),
    Operation("GET", "/api/agents/{name}/versions", list_versions,
              "List an agent's versions, by number",
              {200: obj({"versions": array(ref("AgentVersion"))}, "versions")}),
    Operation("GET", VERSION_PATH, get_version, "Get an agent version", {200: VERSION_RESPONSE}),
    Operation("PATCH", VERSION_PATH, patch_version, "Change an agent version",
              {200: VERSION_RESPONSE}, body=PATCH_BODY),
    Operation("DELETE", VERSION_PATH, delete_version,
              "Delete an agent version (not the active one: 409)",
              {204: None}),
    Operation("POST", f"{VERSION_PATH}/activate", activate_version,
              "Make this the agent's active version: new sessions run its system prompt",
              {200: obj({"activated": BOOLEAN, "versionNumber": INTEGER},
                        "activated", "versionNumber")}),
]
