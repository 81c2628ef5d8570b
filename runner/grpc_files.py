"""The files rpcs of the `Runner` service: the gateway's /files routes on a live workspace.

Every operation is one of `runner.workspace_files` (the functions standalone mode calls on
its own disk), on the workspace `LocalBackend.open_workspace` hands out: no link is ever
followed, a path or archive member that could leave the workspace is refused before
anything is written. Their refusals become status codes the gateway maps back to the same
HTTP statuses as standalone (see `_refusals`). Contents travel in chunks of
`CHUNK_BYTES`, far below either side's message limit; what a call may accumulate here
(a batch of writes, an upload) is bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from runner.backend import BackendError, SandboxGone
from runner.local import LocalBackend, WorkspaceAccess
from runner.safe_walk import WalkLimitError
from runner.workspace_files import (
    NotInWorkspace,
    TooLarge,
    UnsafePath,
    apply_bundle,
    check_bundle,
    delete_file,
    list_files,
    open_file,
    write_files,
)
from wire import runner_pb2 as pb

CHUNK_BYTES = 1024 * 1024
LIST_BATCH = 2000
"""Entries per ListFilesResponse (a batch stays well under 1 MiB)."""
MAX_WRITE_BYTES = 256 * 1024 * 1024
"""Content one WriteFiles call may carry (the gateway takes 200 MiB of base64)."""
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
"""Size of the tar.gz one UploadWorkspace call may carry."""


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


@contextlib.contextmanager
def _refusals() -> Any:
    """The workspace helpers' refusals as status codes (read back by gateway.remote_files)."""
    try:
        yield
    except UnsafePath as exc:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    except NotInWorkspace as exc:
        raise _Refused(grpc.StatusCode.NOT_FOUND, str(exc)) from None
    except (TooLarge, WalkLimitError) as exc:
        raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
    except SandboxGone as exc:
        raise _Refused(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
    except BackendError as exc:
        raise _Refused(grpc.StatusCode.INTERNAL, str(exc)) from None


@contextlib.asynccontextmanager
async def _workspace(backend: LocalBackend, session_id: str) -> AsyncIterator[WorkspaceAccess]:
    with _refusals():
        async with backend.open_workspace(session_id) as access:
            with _refusals():
                yield access


class FilesService:
    """The files rpcs; `RunnerService` hands each call here."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend

    async def list_files(self, request: pb.ListFilesRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ListFilesResponse]:
        try:
            async with _workspace(self.backend, request.session_id) as access:
                files = await asyncio.to_thread(list_files, access.root,
                                                include_hidden=request.include_hidden)
        except _Refused as exc:
            await context.abort(exc.code, exc.details)
        entries = [pb.FileEntry(path=f.path, size=f.size, mtime=f.mtime) for f in files]
        for start in range(0, max(len(entries), 1), LIST_BATCH):
            yield pb.ListFilesResponse(files=entries[start:start + LIST_BATCH])

    async def read_file(self, request: pb.ReadFileRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[pb.FileChunk]:
        try:
            async with _workspace(self.backend, request.session_id) as access:
                opened = await asyncio.to_thread(open_file, access.root, request.path,
                                                 request.max_bytes)
                try:
                    chunks = opened.chunks(CHUNK_BYTES)
                    sent = 0
                    while True:
                        data = await asyncio.to_thread(next, chunks, b"")
                        sent += len(data)
                        last = not data or sent >= opened.size
                        yield pb.FileChunk(size=opened.size if sent == len(data) else 0,
                                           data=data, last=last)
                        if last:
                            return
                finally:
                    opened.close()
        except _Refused as exc:
            await context.abort(exc.code, exc.details)

    async def write_files(self, request_iterator: AsyncIterator[pb.WriteFilesRequest],
                          context: grpc.aio.ServicerContext) -> pb.WriteFilesResponse:
        session_id = ""
        files: list[tuple[str, list[bytes]]] = []
        total = 0
        async for message in request_iterator:
            session_id = session_id or message.session_id
            if message.path:
                files.append((message.path, []))
            elif not files and message.data:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "file content before any path")
            total += len(message.data)
            if total > MAX_WRITE_BYTES:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"the files written exceed {MAX_WRITE_BYTES} bytes")
            if message.data:
                files[-1][1].append(message.data)
        batch = [(path, b"".join(parts)) for path, parts in files]
        try:
            async with _workspace(self.backend, session_id) as access:
                results = await asyncio.to_thread(write_files, access.root, batch, access.owner)
        except _Refused as exc:
            await context.abort(exc.code, exc.details)
        return pb.WriteFilesResponse(files=[
            pb.WriteFileResult(path=r.path, written=r.written, size=r.size, error=r.error)
            for r in results])

    async def delete_file(self, request: pb.DeleteFileRequest,
                          context: grpc.aio.ServicerContext) -> pb.DeleteFileResponse:
        try:
            async with _workspace(self.backend, request.session_id) as access:
                await asyncio.to_thread(delete_file, access.root, request.path)
        except _Refused as exc:
            await context.abort(exc.code, exc.details)
        return pb.DeleteFileResponse()

    async def upload_workspace(self, request_iterator: AsyncIterator[pb.UploadWorkspaceRequest],
                               context: grpc.aio.ServicerContext) -> pb.UploadWorkspaceResponse:
        session_id = ""
        parts: list[bytes] = []
        total = 0
        async for message in request_iterator:
            session_id = session_id or message.session_id
            total += len(message.data)
            if total > MAX_UPLOAD_BYTES:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"the workspace archive exceeds {MAX_UPLOAD_BYTES} bytes")
            parts.append(message.data)
        try:
            with _refusals():
                bundle = await asyncio.to_thread(check_bundle, b"".join(parts))
            async with _workspace(self.backend, session_id) as access:
                written = await asyncio.to_thread(apply_bundle, access.root, bundle,
                                                  access.owner)
        except _Refused as exc:
            await context.abort(exc.code, exc.details)
        return pb.UploadWorkspaceResponse(written=written)
