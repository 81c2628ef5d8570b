"""`/api/agents`: deploy (by path or by upload), list, get, change and delete agents, and
read and change an agent's config."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from gateway import agents
from gateway.api.file_bodies import (
    MAX_FILES_PER_WRITE,
    MIB,
    decoded_files,
    env_bytes,
    mapped_errors,
)
from gateway.api.operation import Operation
from gateway.api.schemas import (
    AGENT_RESPONSE,
    ANY_OBJECT,
    BOOLEAN,
    STRING,
    STRING_MAP,
    array,
    nullable,
    obj,
    ref,
)
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response, string_field
from gateway.store import AgentRow

DEPLOY_MAX_BODY = env_bytes("ASH_AGENT_MAX_BODY_BYTES", 50 * MIB)
"""Body of a deploy or an agent files write: an uploaded folder, base64 in JSON (the
reference allows 50 MB)."""
UPLOAD_FIELDS = ("files", "systemPrompt")


def _env_field(body: dict[str, Any]) -> dict[str, str] | None:
    return agents.check_env(body["env"]) if body.get("env") is not None else None


async def deploy_agent(gw: Gateway, req: Request) -> Response:
    """By `path` (a folder on the gateway host, copied) or by upload (`files`, else
    `systemPrompt`, else a placeholder CLAUDE.md); either replaces a deployed agent."""
    body = await req.json_object(DEPLOY_MAX_BODY)
    name = agents.validate_agent_name(string_field(body, "name") or "")
    env = _env_field(body)
    if body.get("path") is not None:
        if any(body.get(field) is not None for field in UPLOAD_FIELDS):
            raise ApiError(400, "give `path` or `files`/`systemPrompt`, not both")
        source = Path(string_field(body, "path") or "")
        config = agents.with_env(agents.check_agent_folder(source), env)
        if env is not None:
            agents.check_config(config)
        build = partial(agents.copy_with_env, source, config=config, env=env)
    else:
        files = decoded_files(body["files"]) if body.get("files") is not None else []
        prompt = string_field(body, "systemPrompt", required=False)
        if prompt is not None and len(prompt) > agents.MAX_SYSTEM_PROMPT:
            raise ApiError(400, f"`systemPrompt` is longer than {agents.MAX_SYSTEM_PROMPT} "
                                "characters")
        config = agents.upload_config(files, env)
        build = partial(agents.build_upload, name=name, files=files, config=config,
                        system_prompt=prompt)
    async with agents.agent_lock(name, req.tenant_id):
        target = await build_folder(gw, req, name, build)
        row = agents.record_agent(gw.store, name, target, config, req.tenant_id)
    return json_response({"agent": agents.agent_json(row)}, 201)


async def list_agents(gw: Gateway, req: Request) -> Response:
    return json_response({"agents": [agents.agent_json(row)
                                     for row in gw.store.list_agents(req.tenant_id)]})


async def build_folder(gw: Gateway, req: Request, name: str,
                       build: Callable[[Path], None]) -> Path:
    """The caller's agent `name`'s next folder (`agents.stage_agent_folder`), its previous
    one kept while sessions may have it bound (call with the agent's lock held)."""
    in_use = gw.store.count_live_sessions_of_agent(name, req.tenant_id) > 0
    with mapped_errors():
        return await asyncio.to_thread(
            agents.stage_agent_folder, agents.tenant_agents_dir(gw.agents_dir, req.tenant_id),
            name, build, keep_previous=in_use)


def agent_row(gw: Gateway, req: Request) -> AgentRow:
    """The caller's agent the path's `{name}` names; 400 for an invalid name, 404 for one
    the caller's tenant has not deployed (another tenant's answers the same)."""
    name = agents.validate_agent_name(req.path_params["name"])
    row = gw.store.get_agent(name, req.tenant_id)
    if row is None:
        raise ApiError(404, f"agent not found: {name}")
    return row


async def get_agent(gw: Gateway, req: Request) -> Response:
    return json_response({"agent": agents.agent_json(agent_row(gw, req))})


async def delete_agent(gw: Gateway, req: Request) -> Response:
    async with agents.agent_lock(agent_row(gw, req).name, req.tenant_id):
        row = agent_row(gw, req)
        live = gw.store.count_live_sessions_of_agent(row.name, req.tenant_id)
        if live:
            raise ApiError(409, f"agent {row.name} has {live} live session(s); end them first")
        gw.store.delete_agent(row.name, req.tenant_id)
        gw.store.delete_agent_versions(req.tenant_id, row.name)
        await asyncio.to_thread(agents.remove_agent_folder,
                                agents.tenant_agents_dir(gw.agents_dir, req.tenant_id), row.name)
    return json_response({"agent": agents.agent_json(row), "deleted": True})


async def change_config(gw: Gateway, req: Request, patch: dict[str, Any]) -> AgentRow:
    """Merge `patch` into the agent's config (agent.json) as a new version."""
    name = agent_row(gw, req).name
    async with agents.agent_lock(name, req.tenant_id):
        row = agent_row(gw, req)
        config = agents.merged_config(agents.config_of(row), patch)
        target = await build_folder(
            gw, req, name, partial(agents.rebuild_with_config, row, config=config))
        return agents.record_agent(gw.store, name, target, config, req.tenant_id)


async def patch_agent(gw: Gateway, req: Request) -> Response:
    """`{env?, config?}`: config merged shallowly into agent.json, env replacing its env."""
    agent_row(gw, req)
    body = await req.json_object()
    unknown = sorted(set(body) - {"env", "config"})
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)} (expected env, config)")
    patch = body.get("config") if body.get("config") is not None else {}
    if not isinstance(patch, dict):
        raise ApiError(400, "`config` must be an object")
    if body.get("env") is not None:
        patch = {**patch, "env": agents.check_env(body["env"])}
    row = await change_config(gw, req, patch)
    return json_response({"agent": agents.agent_json(row)})


async def get_config(gw: Gateway, req: Request) -> Response:
    config = agents.config_of(agent_row(gw, req))
    return json_response({"config": agents.redacted_config(config)})


async def patch_config(gw: Gateway, req: Request) -> Response:
    agent_row(gw, req)
    patch = await req.json_object()
    row = await change_config(gw, req, patch)
    return json_response({"config": agents.redacted_config(agents.config_of(row))})


FILE_UPLOAD = obj({"path": STRING, "content": STRING}, "path", "content")
DEPLOY_BODY = obj({
    "name": STRING,
    "path": STRING,
    "systemPrompt": STRING,
    "files": {**array(FILE_UPLOAD), "minItems": 1, "maxItems": MAX_FILES_PER_WRITE},
    "env": STRING_MAP,
}, "name")
PATCH_BODY = obj({"env": nullable(STRING_MAP), "config": nullable(ANY_OBJECT)}, extra=False)
"""`null` leaves a field as it is, as in every PATCH here."""
CONFIG_RESPONSE = obj({"config": ANY_OBJECT}, "config")

OPERATIONS = [
    Operation("POST", "/api/agents", deploy_agent,
              "Deploy an agent: a folder on the gateway host (`path`), or uploaded `files` "
              "(base64) / a `systemPrompt`", {201: AGENT_RESPONSE}, body=DEPLOY_BODY),
    Operation("GET", "/api/agents", list_agents, "List agents",
              {200: obj({"agents": array(ref("Agent"))}, "agents")}),
    Operation("GET", "/api/agents/{name}", get_agent, "Get an agent", {200: AGENT_RESPONSE}),
    Operation("PATCH", "/api/agents/{name}", patch_agent,
              "Change an agent's env and config (merged shallowly) as a new version",
              {200: AGENT_RESPONSE}, body=PATCH_BODY),
    Operation("DELETE", "/api/agents/{name}", delete_agent, "Delete an agent",
              {200: obj({"agent": ref("Agent"), "deleted": BOOLEAN}, "agent", "deleted")}),
    Operation("GET", "/api/agents/{name}/config", get_config,
              "An agent's config (agent.json), env values redacted", {200: CONFIG_RESPONSE}),
    Operation("PATCH", "/api/agents/{name}/config", patch_config,
              "Merge an object into an agent's config as a new version",
              {200: CONFIG_RESPONSE}, body=ANY_OBJECT),
]
