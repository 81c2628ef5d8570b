"""`/api/sessions/{id}/files` and `/workspace`: a session's workspace, in the reference's shape.

Standalone mode reads and writes the workspace on this machine's disk: the live sandbox's,
or the one kept after its sandbox stopped (mounted for the request). Every path goes through
`runner.workspace_files`, which never follows a link: a path or archive member that could
leave the workspace is refused with 400 before anything is written.

Coordinator mode: while the session's sandbox is live on a runner, every operation goes
to that runner over gRPC (gateway.remote_files, runner.grpc_files), which runs the same
`runner.workspace_files` functions on its disk: `source` is "sandbox"; a change to a paused
session ships its state to the gateway again, as its pause did. With no live sandbox
(paused after its runner went, stopped), reads serve the stored state (the tar the runner
last shipped, `source` "snapshot"), and writes, deletes and uploads edit that stored state
(gateway.stored_files: unpacked in a scratch directory, the same functions applied, packed
again), holding the session meanwhile (409 to a turn or resume), so the next resume, on any
runner, restores the edited tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.api.file_bodies import (
    JSON_READ_MAX,
    MAX_FILES_PER_WRITE,
    MIB,
    RAW_READ_MAX,
    decode_base64,
    decoded_files,
    env_bytes,
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
from gateway.api.schemas import BOOLEAN, INTEGER, ISO_TIME, STRING, Schema, array, obj
from gateway.context import Gateway
from gateway.coordinator import Coordinator
from gateway.http import ApiError, Request, Response, json_response
from gateway.remote_files import RemoteFiles
from gateway.timestamps import iso_utc
from runner.backend import BackendError, SandboxGone
from runner.local import LocalBackend, WorkspaceAccess
from runner.workspace_files import (
    WriteResult,
    apply_bundle,
    check_bundle,
    delete_file,
    list_files,
    open_file,
    split_path,
    write_files,
)
from runner.workspace_state import pack_workspace

log = logging.getLogger("ash.gateway")

FILES_MAX_BODY = env_bytes("ASH_FILES_MAX_BODY_BYTES", 200 * MIB)
"""Body of a files write (base64 in JSON), as the reference allows."""
WORKSPACE_MAX_BODY = env_bytes("ASH_WORKSPACE_MAX_BODY_BYTES", 134 * MIB)
"""Body of a workspace upload (a base64 tar.gz in JSON), as the reference allows."""
NO_WORKSPACE = "No workspace available for this session"


@contextlib.contextmanager
def _mapped_errors() -> Any:
    """The workspace helpers' and the runner's refusals as the client's errors."""
    try:
        with mapped_errors():
            yield
    except SandboxGone:
        raise ApiError(404, NO_WORKSPACE) from None
    except BackendError as exc:
        raise ApiError(503, f"the session's workspace is not reachable: {exc}") from None


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


def _live_files(gw: Gateway, session_id: str) -> RemoteFiles | None:
    """The files rpcs of the session's live sandbox (coordinator mode); None without one."""
    assert isinstance(gw.backend, Coordinator)
    return gw.backend.live_files(session_id)


T = TypeVar("T")


async def _coordinated(gw: Gateway, session_id: str,
                       live: Callable[[RemoteFiles], Awaitable[T]],
                       stored: Callable[[Path], T]) -> tuple[T, bool]:
    """A change in coordinator mode: on the live sandbox's runner, else to the stored state
    with the session held (no turn or resume starts on it meanwhile; concurrent edits wait
    their turn). Whether it was live."""
    assert isinstance(gw.backend, Coordinator)
    with _mapped_errors():
        remote = gw.backend.live_files(session_id)
        if remote is None:
            async with gw.backend.edit_lock(session_id):
                with gw.sessions.held(session_id):
                    remote = gw.backend.live_files(session_id)
                    if remote is None:
                        return await gw.backend.edit_stored_state(session_id, stored), False
        result = await live(remote)
    await _ship_if_paused(gw, session_id)
    return result, True


async def _ship_if_paused(gw: Gateway, session_id: str) -> None:
    """A paused session's state is durable off its runner (pause shipped it): ship it again
    after a change, so losing the runner before the resume loses nothing."""
    if gw.sessions.get(session_id).status == "active":
        return
    try:
        await gw.backend.checkpoint(session_id)
    except BackendError as exc:
        log.warning("session %s: state not shipped after a files change: %s", session_id, exc)


def _session_id(gw: Gateway, req: Request) -> str:
    """The id of a session that exists (404) and has not ended (410)."""
    return gw.sessions.get_live(req.path_params["id"], req.tenant_id).id


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
        remote = _live_files(gw, session_id)
        if remote is None:
            entries = _tar_files(await _stored_state(gw, session_id), hidden)
            return json_response({"files": entries, "source": "snapshot"})
        with _mapped_errors():
            files = await remote.list(hidden)
        source = "sandbox"
    else:
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
        remote = _live_files(gw, session_id)
        if remote is None:
            data = _tar_member(await _stored_state(gw, session_id), path, limit)
            return _file_response(req, path, data, form, "snapshot")
        return await _read_remote(req, remote, path, form, limit)
    async with _workspace(gw, session_id) as access:
        source = "sandbox" if access.live else "snapshot"
        opened = await asyncio.to_thread(open_file, access.root, path, limit)
        try:
            if form == "json" or opened.size <= MIB:
                data = await asyncio.to_thread(opened.read_all)
                return _file_response(req, path, data, form, source)
            await stream_file(req, opened.size, iterate(opened.chunks()),
                              raw_headers(path, opened.size, _source_header(source)))
            return None
        finally:
            opened.close()


async def _read_remote(req: Request, remote: RemoteFiles, path: str, form: str,
                       limit: int) -> Response | None:
    with _mapped_errors():
        opened = await remote.open(path, limit)
        if form == "json" or opened.size <= MIB:
            return _file_response(req, path, await opened.read_all(), form, "sandbox")
    await stream_file(req, opened.size, opened.chunks,
                      raw_headers(path, opened.size, _source_header("sandbox")))
    return None


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


def _result_json(result: WriteResult) -> dict[str, Any]:
    if result.written:
        return {"path": result.path, "written": True, "size": result.size}
    return {"path": result.path, "written": False, "error": result.error}


async def write_workspace_files(gw: Gateway, session_id: str,
                                files: list[tuple[str, bytes]]) -> list[WriteResult]:
    """Write checked `(path, bytes)` pairs into the session's workspace, wherever it is
    (also what an attachment's upload places in it)."""
    if not _local(gw):
        results, _ = await _coordinated(gw, session_id, lambda remote: remote.write(files),
                                        lambda root: write_files(root, files, None))
        return results
    async with _workspace(gw, session_id) as access:
        return await asyncio.to_thread(write_files, access.root, files, access.owner)


async def write_session_files(gw: Gateway, req: Request) -> Response:
    session_id = _session_id(gw, req)
    files = _decoded_files(await req.json_object(FILES_MAX_BODY))
    results = await write_workspace_files(gw, session_id, files)
    return json_response({"files": [_result_json(result) for result in results]})


async def delete_session_file(gw: Gateway, req: Request) -> Response:
    session_id = _session_id(gw, req)
    path = path_param(req)
    if not _local(gw):
        await _coordinated(gw, session_id, lambda remote: remote.delete(path),
                           lambda root: delete_file(root, path))
        return json_response({"path": path, "deleted": True})
    async with _workspace(gw, session_id) as access:
        await asyncio.to_thread(delete_file, access.root, path)
    return json_response({"path": path, "deleted": True})


# workspace


async def download_workspace(gw: Gateway, req: Request) -> Response:
    session_id = _session_id(gw, req)
    if not _local(gw):
        remote = _live_files(gw, session_id)
        if remote is None:
            archive = await _stored_state(gw, session_id)
        else:
            with _mapped_errors():
                archive = await remote.download()
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
    if gw.sessions.is_busy(session_id):
        raise ApiError(409, "session is busy with a turn; upload the workspace after its done")
    if not _local(gw):
        _, live = await _coordinated(gw, session_id, lambda remote: remote.upload(archive),
                                     lambda root: apply_bundle(root, checked, None))
    else:
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
