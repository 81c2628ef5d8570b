"""The files API of a live sandbox on a runner: the `Runner` files rpcs (runner/grpc_files.py).

The runner does the work with the same `runner.workspace_files` functions standalone mode
calls; its refusals come back as status codes and are raised here as those functions'
own exceptions (UnsafePath, NotInWorkspace, TooLarge), so gateway/api/files.py maps both
modes to the same HTTP statuses. Contents go in chunks of `CHUNK_BYTES`, far below the
channel's message limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from runner.backend import BackendError, SandboxGone
from runner.workspace_files import FileInfo, NotInWorkspace, TooLarge, UnsafePath, WriteResult
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc

CHUNK_BYTES = 1024 * 1024
CALL_TIMEOUT = 120.0
"""A file or archive of some hundred MiB, on a slow link."""


def _error(exc: grpc.aio.AioRpcError, runner_id: str) -> Exception:
    code, details = exc.code(), exc.details() or exc.code().name
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return UnsafePath(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotInWorkspace(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return TooLarge(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return SandboxGone(details)
    return BackendError(f"runner {runner_id}: {details}")


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file being read from a runner: its size, and its content still to come."""

    size: int
    chunks: AsyncIterator[bytes]

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks])


class RemoteFiles:
    """One runner's files rpcs for a session."""

    def __init__(self, stub: pb_grpc.RunnerStub, metadata: Any, runner_id: str,
                 session_id: str) -> None:
        self._stub = stub
        self._metadata = metadata
        self._runner_id = runner_id
        self.session_id = session_id

    async def list(self, include_hidden: bool) -> list[FileInfo]:
        call = self._stub.ListFiles(
            pb.ListFilesRequest(session_id=self.session_id, include_hidden=include_hidden),
            metadata=self._metadata, timeout=CALL_TIMEOUT)
        try:
            return [FileInfo(entry.path, entry.size, entry.mtime)
                    async for batch in call for entry in batch.files]
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._runner_id) from None

    async def open(self, path: str, max_bytes: int) -> RemoteFile:
        """The file's first chunk is read here, so a refusal comes before any response."""
        call = self._stub.ReadFile(
            pb.ReadFileRequest(session_id=self.session_id, path=path, max_bytes=max_bytes),
            metadata=self._metadata, timeout=CALL_TIMEOUT)
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._runner_id) from None
        if first is grpc.aio.EOF:
            raise BackendError(f"runner {self._runner_id} sent no content for {path}")
        return RemoteFile(first.size, self._rest(call, first))

    async def _rest(self, call: Any, first: pb.FileChunk) -> AsyncIterator[bytes]:
        if first.data:
            yield first.data
        if first.last:
            return
        try:
            while (chunk := await call.read()) is not grpc.aio.EOF:
                if chunk.data:
                    yield chunk.data
                if chunk.last:
                    return
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._runner_id) from None

    async def write(self, files: list[tuple[str, bytes]]) -> list[WriteResult]:
        try:
            response = await self._stub.WriteFiles(
                _aiter(self._write_messages(files)), metadata=self._metadata,
                timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._runner_id) from None
        return [WriteResult(r.path, r.written, r.size, r.error) for r in response.files]

    def _write_messages(self, files: list[tuple[str, bytes]]) -> Iterator[pb.WriteFilesRequest]:
        yield pb.WriteFilesRequest(session_id=self.session_id)
        for path, data in files:
            yield pb.WriteFilesRequest(path=path, data=data[:CHUNK_BYTES])
            for offset in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
                yield pb.WriteFilesRequest(data=data[offset:offset + CHUNK_BYTES])

    async def delete(self, path: str) -> None:
        try:
            await self._stub.DeleteFile(
                pb.DeleteFileRequest(session_id=self.session_id, path=path),
                metadata=self._metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._runner_id) from None

    async def upload(self, archive: bytes) -> int:
        messages = [pb.UploadWorkspaceRequest(session_id=self.session_id)]
        messages += [pb.UploadWorkspaceRequest(data=archive[offset:offset + CHUNK_BYTES])
                     for offset in range(0, len(archive), CHUNK_BYTES)]
        try:
            response = await self._stub.UploadWorkspace(
                _aiter(iter(messages)), metadata=self._metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._runner_id) from None
        return int(response.written)

    async def download(self) -> bytes:
        """The workspace as a tar.gz (SnapshotState, with no size limit)."""
        call = self._stub.SnapshotState(
            pb.SnapshotStateRequest(session_id=self.session_id),
            metadata=self._metadata, timeout=CALL_TIMEOUT)
        try:
            return b"".join([chunk.data async for chunk in call])
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._runner_id) from None


async def _aiter(messages: Iterator[Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield message
