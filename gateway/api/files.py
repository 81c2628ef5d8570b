"""`/api/sessions/{id}/files` and `/workspace`: a session's workspace, in the reference's shape.

Standalone mode reads and writes the workspace on this machine's disk: the live sandbox's,
or the one kept after its sandbox stopped (mounted for the request). Every path goes through
`runner.workspace_files`, which never follows a link: a path or archive member that could
leave the workspace is refused with 400 before anything is written.

Coordinator mode serves the stored state (the tar the runner shipped after the last turn)
read-only: list, read and download; writes answer 501.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
from collections.abc import AsyncIterator
from typing import Any

from gateway.api.file_bodies import (
    JSON_READ_MAX,
    MAX_FILES_PER_WRITE,
    MIB,
    RAW_READ_MAX,
    decode_base64,
    decoded_files,
    env_bytes,
    file_json,
    mapped_errors,
    path_param,
    raw_headers,
    raw_response,
    read_format,
    stream_file,
)
from gateway.api.operation import JSON, Content, Operation, Param
from gateway.api.schemas import BOOLEAN, INTEGER, ISO_TIME, STRING, Schema, array, obj
from gateway.context import Gateway
from gateway.coordinator import Coordinator
from gateway.http import ApiError, Request, Response, json_response
from gateway.timestamps import iso_utc
from runner.backend import SandboxGone
from runner.local import LocalBackend, WorkspaceAccess
from runner.workspace_files import (
    UnsafePath,
    apply_bundle,
    check_bundle,
    check_writable,
    delete_file,
    list_files,
    open_file,
    split_path,
    write_file,
)
from runner.workspace_state import pack_workspace

FILES_MAX_BODY = env_bytes("ASH_FILES_MAX_BODY_BYTES", 200 * MIB)
"""Body of a files write (base64 in JSON), as the reference allows."""
WORKSPACE_MAX_BODY = env_bytes("ASH_WORKSPACE_MAX_BODY_BYTES", 134 * MIB)
"""Body of a workspace upload (a base64 tar.gz in JSON), as the reference allows."""
NO_WORKSPACE = "No workspace available for this session"


@contextlib.asynccontextmanager
async def _workspace(gw: Gateway, session_id: str) -> AsyncIterator[WorkspaceAccess]:
    """The session's workspace on this machine (standalone mode)."""
    assert isinstance(gw.backend, LocalBackend)
    try:
        async with gw.backend.open_workspace(session_id) as access:
            with mapped_errors():
                yield access
    except SandboxGone:
        raise ApiError(404, NO_WORKSPACE) from None


def _local(gw: Gateway) -> bool:
    return isinstance(gw.backend, LocalBackend)


async def _stored_state(gw: Gateway, session_id: str) -> bytes:
    """The state the runner last shipped (coordinator mode); 404 when it shipped none."""
    state = (await gw.backend.stored_state(session_id)
             if isinstance(gw.backend, Coordinator) else None)
    if state is None:
        raise ApiError(404, NO_WORKSPACE)
    return state


def _read_only() -> ApiError:
    return ApiError(501, "writing a session's files is not available in coordinator mode yet "
                         "(its workspace lives on a runner); use exec")


def _session_id(gw: Gateway, req: Request) -> str:
    """The id of a session that exists (404) and has not ended (410)."""
    return gw.sessions.get_live(req.path_params["id"]).id


def _include_hidden(req: Request) -> bool:
    value = req.query().get("includeHidden", "false")
    if value not in ("true", "false"):
        raise ApiError(400, "`includeHidden` must be true or false")
    return value == "true"


# list


async def list_session_files(gw: Gateway, req: Request) -> Response:
    session_id = _session_id(gw, req)
    hidden = _include_hidden(req)
    if not _local(gw):
        entries = _tar_files(await _stored_state(gw, session_id), hidden)
        return json_response({"files": entries, "source": "snapshot"})
    async with _workspace(gw, session_id) as access:
        files = await asyncio.to_thread(list_files, access.root, include_hidden=hidden)
        source = "sandbox" if access.live else "snapshot"
    return json_response({
        "files": [{"path": f.path, "size": f.size, "modifiedAt": iso_utc(f.mtime)} for f in files],
        "source": source,
    })


def _tar_files(state: bytes, include_hidden: bool) -> list[dict[str, Any]]:
    files = []
    with _tar(state) as tar:
        for member in tar:
            if not member.isreg():
                continue
            name = member.name.removeprefix("./")
            if not include_hidden and any(p.startswith(".") for p in name.split("/")):
                continue
            files.append({"path": name, "size": member.size, "modifiedAt": iso_utc(member.mtime)})
    return files


def _tar(state: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(state), mode="r:*")
    except tarfile.TarError as exc:
        raise ApiError(500, f"the stored state is not a tar archive: {exc}") from None


# read


async def read_session_file(gw: Gateway, req: Request) -> Response | None:
    session_id = _session_id(gw, req)
    path = path_param(req)
    form = read_format(req, "raw")
    limit = JSON_READ_MAX if form == "json" else RAW_READ_MAX
    if not _local(gw):
        data = _tar_member(await _stored_state(gw, session_id), path, limit)
        return _file_response(req, path, data, form, "snapshot")
    async with _workspace(gw, session_id) as access:
        source = "sandbox" if access.live else "snapshot"
        opened = await asyncio.to_thread(open_file, access.root, path, limit)
        try:
            if form == "json" or opened.size <= MIB:
                data = await asyncio.to_thread(opened.read_all)
                return _file_response(req, path, data, form, source)
            await stream_file(req, opened.size, opened.chunks(),
                              raw_headers(path, opened.size, _source_header(source)))
            return None
        finally:
            opened.close()


def _tar_member(state: bytes, path: str, limit: int) -> bytes:
    wanted = "/".join(split_path(path))
    with _tar(state) as tar:
        for member in tar:
            if member.name.removeprefix("./") != wanted:
                continue
            if not member.isreg():
                raise ApiError(404, f"not a regular file: {path}")
            if member.size > limit:
                raise ApiError(413, f"{path} is {member.size} bytes, more than the {limit} "
                                    "this read returns")
            source = tar.extractfile(member)
            assert source is not None
            return source.read()
    raise ApiError(404, f"file not found: {path}")


def _source_header(source: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-ash-source", source.encode())]


def _file_response(req: Request, path: str, data: bytes, form: str, source: str) -> Response:
    if form == "json":
        return json_response({**file_json(path, data), "source": source})
    return raw_response(path, data, _source_header(source))


# write


def _decoded_files(body: dict[str, Any]) -> list[tuple[str, bytes]]:
    """`files` (and `targetPath`) checked whole: every path safe, every content base64."""
    target = body.get("targetPath", ".")
    if not isinstance(target, str):
        raise ApiError(400, "`targetPath` must be a string")
    with mapped_errors():
        prefix = [] if target in ("", ".", "./") else split_path(target)
    return decoded_files(body.get("files"), prefix)


def _write_all(access: WorkspaceAccess, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    for path, _ in files:
        check_writable(access.root, path)
    results: list[dict[str, Any]] = []
    for path, data in files:
        try:
            size = write_file(access.root, path, data, access.owner)
        except (OSError, UnsafePath) as exc:
            results.append({"path": path, "written": False,
                            "error": str(exc) if isinstance(exc, UnsafePath) else exc.strerror})
        else:
            results.append({"path": path, "written": True, "size": size})
    return results


async def write_session_files(gw: Gateway, req: Request) -> Response:
    session_id = _session_id(gw, req)
    files = _decoded_files(await req.json_object(FILES_MAX_BODY))
    if not _local(gw):
        raise _read_only()
    async with _workspace(gw, session_id) as access:
        results = await asyncio.to_thread(_write_all, access, files)
    return json_response({"files": results})


async def delete_session_file(gw: Gateway, req: Request) -> Response:
    session_id = _session_id(gw, req)
    path = path_param(req)
    if not _local(gw):
        raise _read_only()
    async with _workspace(gw, session_id) as access:
        await asyncio.to_thread(delete_file, access.root, path)
    return json_response({"path": path, "deleted": True})


# workspace


async def download_workspace(gw: Gateway, req: Request) -> Response:
    session_id = _session_id(gw, req)
    if not _local(gw):
        archive = await _stored_state(gw, session_id)
    else:
        async with _workspace(gw, session_id) as access:
            archive = await asyncio.to_thread(pack_workspace, access.root)
    return Response(200, archive, b"application/gzip", [
        (b"content-disposition", f'attachment; filename="{session_id}.tar.gz"'.encode()),
    ])


async def upload_workspace(gw: Gateway, req: Request) -> Response:
    """Unpack a tar.gz over the workspace (files it does not name stay), refused whole when
    any member could leave it, and while a turn runs (the agent is writing the same tree)."""
    session_id = _session_id(gw, req)
    body = await req.json_object(WORKSPACE_MAX_BODY)
    bundle = body.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        raise ApiError(400, "`bundle` (a base64 tar.gz) is required")
    archive = decode_base64(bundle, "`bundle`")
    with mapped_errors():
        checked = await asyncio.to_thread(check_bundle, archive)
    if not _local(gw):
        raise _read_only()
    if gw.sessions.is_busy(session_id):
        raise ApiError(409, "session is busy with a turn; upload the workspace after its done")
    async with _workspace(gw, session_id) as access:
        await asyncio.to_thread(apply_bundle, access.root, checked, access.owner)
        live = access.live
    return json_response({"message": "Workspace restored to live sandbox" if live
                          else "Workspace saved as snapshot"})


FILE_ENTRY = obj({"path": STRING, "size": INTEGER, "modifiedAt": ISO_TIME},
                 "path", "size", "modifiedAt")
SOURCE: Schema = {"type": "string", "enum": ["sandbox", "snapshot"]}
LISTING = obj({"files": array(FILE_ENTRY), "source": SOURCE}, "files", "source")
FILE_JSON = obj({"path": STRING, "size": INTEGER, "source": SOURCE, "content": STRING,
                 "encoding": {"type": "string", "const": "base64"}},
                "path", "size", "source", "content")
WRITE_BODY = obj({
    "files": {**array(obj({"path": STRING, "content": STRING, "mimeType": STRING},
                          "path", "content")),
              "minItems": 1, "maxItems": MAX_FILES_PER_WRITE},
    "targetPath": STRING,
}, "files")
WRITE_RESULT = obj({"files": array(obj({"path": STRING, "written": BOOLEAN, "size": INTEGER,
                                        "error": STRING}, "path", "written"))}, "files")
ID_QUERY = (Param("includeHidden", {"type": "string", "enum": ["true", "false"]}),)
FORMAT_QUERY = (Param("format", {"type": "string", "enum": ["json", "raw"]},
                      "json: `{path, content, size, source}` (up to 1 MiB); raw (default): "
                      "the bytes"),)

OPERATIONS = [
    Operation("GET", "/api/sessions/{id}/files", list_session_files,
              "List the workspace's files (live sandbox, else the stored workspace)",
              {200: LISTING}, query=ID_QUERY),
    Operation("POST", "/api/sessions/{id}/files", write_session_files,
              "Write files (base64), many at once", {200: WRITE_RESULT}, body=WRITE_BODY),
    Operation("GET", "/api/sessions/{id}/files/{path+}", read_session_file, "Read a file",
              {200: (Content(JSON, FILE_JSON), Content("application/octet-stream"))},
              query=FORMAT_QUERY),
    Operation("DELETE", "/api/sessions/{id}/files/{path+}", delete_session_file,
              "Delete a file",
              {200: obj({"path": STRING, "deleted": BOOLEAN}, "path", "deleted")}),
    Operation("GET", "/api/sessions/{id}/workspace", download_workspace,
              "Download the workspace as a tar.gz", {200: Content("application/gzip")}),
    Operation("POST", "/api/sessions/{id}/workspace", upload_workspace,
              "Unpack a tar.gz (base64) over the workspace",
              {200: obj({"message": STRING}, "message")}, body=obj({"bundle": STRING}, "bundle")),
]
