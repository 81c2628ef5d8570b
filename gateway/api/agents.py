"""`/api/agents`: deploy, list, get and delete agents."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway import agents
from gateway.api.operation import Operation
from gateway.api.schemas import AGENT_RESPONSE, BOOLEAN, STRING, array, obj, ref
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response, string_field
from gateway.store import AgentRow


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


def agent_row(gw: Gateway, req: Request) -> AgentRow:
    """The agent the path's `{name}` names; 400 for an invalid name, 404 for an unknown one."""
    name = agents.validate_agent_name(req.path_params["name"])
    row = gw.store.get_agent(name)
    if row is None:
        raise ApiError(404, f"agent not found: {name}")
    return row


async def get_agent(gw: Gateway, req: Request) -> Response:
    return json_response({"agent": agents.agent_json(agent_row(gw, req))})


async def delete_agent(gw: Gateway, req: Request) -> Response:
    row = agent_row(gw, req)
    live = gw.store.count_live_sessions_of_agent(row.name)
    if live:
        raise ApiError(409, f"agent {row.name} has {live} live session(s); end them first")
    gw.store.delete_agent(row.name)
    await asyncio.to_thread(agents.remove_agent_folder, gw.agents_dir, row.name)
    return json_response({"agent": agents.agent_json(row), "deleted": True})


DEPLOY_BODY = obj({"name": STRING, "path": STRING}, "name")

OPERATIONS = [
    Operation("POST", "/api/agents", deploy_agent, "Deploy an agent", {201: AGENT_RESPONSE},
              body=DEPLOY_BODY),
    Operation("GET", "/api/agents", list_agents, "List agents",
              {200: obj({"agents": array(ref("Agent"))}, "agents")}),
    Operation("GET", "/api/agents/{name}", get_agent, "Get an agent", {200: AGENT_RESPONSE}),
    Operation("DELETE", "/api/agents/{name}", delete_agent, "Delete an agent",
              {200: obj({"agent": ref("Agent"), "deleted": BOOLEAN}, "agent", "deleted")}),
]
