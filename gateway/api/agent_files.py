"""`/api/agents/{name}/files`: list, read, write and delete the files of a deployed agent.

Every path goes through `runner.workspace_files`, which never follows a link (a deploy by
path copies the folder's symbolic links as links): a path through one is refused with 400.
A write or delete builds the agent's next version (see `gateway.agents`): a batch with one
bad path changes nothing, and new sessions see the change.

agent.json is the agent's config: read here it is the config with env values redacted
("***"), as `GET /api/agents/{name}/config` shows it; it is changed only through
`PATCH /api/agents/{name}/config` (a redacted copy written back would lose the secrets).
CLAUDE.md may be rewritten but not deleted (a session needs it).
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import orjson

from gateway import agents
from gateway.api.agents import DEPLOY_MAX_BODY, FILE_UPLOAD, agent_row, build_folder
from gateway.api.file_bodies import (
    JSON_READ_MAX,
    MAX_FILES_PER_WRITE,
    MIB,
    RAW_READ_MAX,
    decoded_files,
    file_json,
    iterate,
    mapped_errors,
    path_param,
    raw_headers,
    raw_response,
    read_format,
    stream_file,
)
from gateway.api.operation import JSON, Content, Operation, Param
from gateway.api.schemas import BOOLEAN, INTEGER, ISO_TIME, STRING, array, obj
from gateway.context import Gateway
from gateway.http import Request, Response, json_response
from gateway.store import AgentRow
from gateway.timestamps import iso_utc
from runner.workspace_files import list_files, open_file, split_path


def _config_file(row: AgentRow) -> bytes:
    """agent.json as the files routes show it: the config, env values redacted."""
    return orjson.dumps(agents.redacted_config(agents.config_of(row)), option=orjson.OPT_INDENT_2)


async def list_agent_files(gw: Gateway, req: Request) -> Response:
    row = agent_row(gw, req)
    with mapped_errors():
        files = await asyncio.to_thread(list_files, Path(row.path), include_hidden=True)
    listed = []
    for info in files:
        size = len(_config_file(row)) if info.path == agents.CONFIG_FILE else info.size
        listed.append({"path": info.path, "size": size, "modifiedAt": iso_utc(info.mtime)})
    return json_response({"files": listed})


async def read_agent_file(gw: Gateway, req: Request) -> Response | None:
    row = agent_row(gw, req)
    path = "/".join(split_path(path_param(req)))
    form = read_format(req, "json")
    limit = JSON_READ_MAX if form == "json" else RAW_READ_MAX
    if path == agents.CONFIG_FILE:
        data = _config_file(row)
        return json_response(file_json(path, data)) if form == "json" \
            else raw_response(path, data)
    with mapped_errors():
        opened = await asyncio.to_thread(open_file, Path(row.path), path, limit)
    try:
        if form == "json" or opened.size <= MIB:
            data = await asyncio.to_thread(opened.read_all)
            return json_response(file_json(path, data)) if form == "json" \
                else raw_response(path, data)
        await stream_file(req, opened.size, iterate(opened.chunks()),
                          raw_headers(path, opened.size))
        return None
    finally:
        opened.close()


async def write_agent_files(gw: Gateway, req: Request) -> Response:
    name = agent_row(gw, req).name
    body = await req.json_object(DEPLOY_MAX_BODY)
    files = decoded_files(body.get("files"))
    for path, _ in files:
        agents.protected(path, "write")
    async with agents.agent_lock(name, req.tenant_id):
        row = agent_row(gw, req)
        target = await build_folder(gw, req, name,
                                    partial(agents.rebuild_with_files, row, files=files))
        agents.record_agent(gw.store, name, target, agents.config_of(row), req.tenant_id)
    return json_response({"written": len(files)})


async def delete_agent_file(gw: Gateway, req: Request) -> Response:
    name = agent_row(gw, req).name
    path = "/".join(split_path(path_param(req)))
    agents.protected(path, "delete")
    async with agents.agent_lock(name, req.tenant_id):
        row = agent_row(gw, req)
        target = await build_folder(gw, req, name,
                                    partial(agents.rebuild_without, row, path=path))
        agents.record_agent(gw.store, name, target, agents.config_of(row), req.tenant_id)
    return json_response({"deleted": True})


FILE_ENTRY = obj({"path": STRING, "size": INTEGER, "modifiedAt": ISO_TIME},
                 "path", "size", "modifiedAt")
FILE_JSON = obj({"path": STRING, "size": INTEGER, "content": STRING,
                 "encoding": {"type": "string", "const": "base64"}}, "path", "size", "content")
WRITE_BODY = obj({"files": {**array(FILE_UPLOAD), "minItems": 1,
                            "maxItems": MAX_FILES_PER_WRITE}}, "files")
FORMAT_QUERY = (Param("format", {"type": "string", "enum": ["json", "raw"]},
                      "json (default): `{path, content, size}` (up to 1 MiB); raw: the bytes"),)

OPERATIONS = [
    Operation("GET", "/api/agents/{name}/files", list_agent_files,
              "List an agent's files (hidden ones too; links are not followed)",
              {200: obj({"files": array(FILE_ENTRY)}, "files")}),
    Operation("POST", "/api/agents/{name}/files", write_agent_files,
              "Write files (base64) into an agent's folder as a new version",
              {200: obj({"written": INTEGER}, "written")}, body=WRITE_BODY),
    Operation("GET", "/api/agents/{name}/files/{path+}", read_agent_file,
              "Read a file of an agent (agent.json with env values redacted)",
              {200: (Content(JSON, FILE_JSON), Content("application/octet-stream"))},
              query=FORMAT_QUERY),
    Operation("DELETE", "/api/agents/{name}/files/{path+}", delete_agent_file,
              "Delete a file of an agent as a new version",
              {200: obj({"deleted": BOOLEAN}, "deleted")}),
]
