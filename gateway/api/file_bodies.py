"""What the files routes share (a session's workspace, an agent's folder): the body of a
files write (`{files: [{path, content (base64)}]}`) checked whole, a file read's JSON and
raw forms, and the workspace helpers' refusals as the client's errors."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import mimetypes
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

from gateway.http import ApiError, Request, Response
from runner.backend import BackendError
from runner.safe_walk import WalkLimitError
from runner.workspace_files import NotInWorkspace, TooLarge, UnsafePath, split_path

log = logging.getLogger("ash.gateway")


def env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{name} must be a positive number of bytes, not {raw!r}")
    return int(raw)


MIB = 1024 * 1024
JSON_READ_MAX = MIB
"""Largest file `?format=json` returns."""
RAW_READ_MAX = 100 * MIB
"""Largest file `?format=raw` streams."""
MAX_FILES_PER_WRITE = 500
OCTET_STREAM = "application/octet-stream"


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """The workspace helpers' refusals as the client's errors."""
    try:
        yield
    except UnsafePath as exc:
        raise ApiError(400, str(exc)) from None
    except TooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except NotInWorkspace as exc:
        raise ApiError(404, str(exc)) from None
    except WalkLimitError as exc:
        raise ApiError(413, str(exc)) from None


def path_param(req: Request) -> str:
    """The route's `{path+}`, refused (400) when it could leave the folder."""
    path = req.path_params["path"]
    with mapped_errors():
        split_path(path)
    return path


def read_format(req: Request, default: str) -> str:
    form = req.query().get("format", default)
    if form not in ("json", "raw"):
        raise ApiError(400, "`format` must be json or raw")
    return form


def decode_base64(content: str, label: str) -> bytes:
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{label} is not valid base64") from None


def decoded_files(files: Any, prefix: list[str] | None = None,
                  max_files: int = MAX_FILES_PER_WRITE) -> list[tuple[str, bytes]]:
    """`files` checked whole before anything is written: a list of `{path, content}`,
    every path safe (relative, no `..`) and named once, every content base64. The paths
    come back normalised (`a/./b` → `a/b`) under `prefix`."""
    if not isinstance(files, list) or not 1 <= len(files) <= max_files:
        raise ApiError(400, f"`files` must be a list of 1 to {max_files} "
                            "{path, content} objects")
    decoded: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for index, item in enumerate(files):
        if not isinstance(item, dict):
            raise ApiError(400, f"`files[{index}]` must be an object")
        path, content = item.get("path"), item.get("content")
        if not isinstance(path, str) or not path:
            raise ApiError(400, f"`files[{index}].path` must be a non-empty string")
        if not isinstance(content, str):
            raise ApiError(400, f"`files[{index}].content` must be a base64 string")
        if "mimeType" in item and not isinstance(item["mimeType"], str):
            raise ApiError(400, f"`files[{index}].mimeType` must be a string")
        with mapped_errors():
            parts = split_path(path)
        normal = "/".join([*(prefix or []), *parts])
        if normal in seen:
            raise ApiError(400, f"`files[{index}].path` names {normal} a second time")
        seen.add(normal)
        decoded.append((normal, decode_base64(content, f"`files[{index}].content`")))
    return decoded


def file_json(path: str, data: bytes) -> dict[str, Any]:
    """A file read's JSON form: text as is, other bytes as base64 (`encoding`)."""
    body: dict[str, Any] = {"path": path, "size": len(data)}
    try:
        body["content"] = data.decode("utf-8")
    except UnicodeDecodeError:
        body["content"] = base64.b64encode(data).decode()
        body["encoding"] = "base64"
    return body


def raw_headers(path: str, size: int,
                extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    """Content type and length first, then an attachment's disposition and `extra`.
    A JSON file's raw bytes are typed application/octet-stream: application/json is the
    `?format=json` form (`{path, content, size}`), which a client tells apart by its type."""
    mime = mimetypes.guess_type(path)[0] or OCTET_STREAM
    if mime == "application/json":
        mime = OCTET_STREAM
    name = path.rsplit("/", 1)[-1]
    return [
        (b"content-type", mime.encode()),
        (b"content-length", str(size).encode()),
        (b"content-disposition", f"attachment; filename*=UTF-8''{quote(name)}".encode()),
        *(extra or []),
        (b"x-content-type-options", b"nosniff"),
    ]


def raw_response(path: str, data: bytes,
                 extra: list[tuple[bytes, bytes]] | None = None) -> Response:
    headers = raw_headers(path, len(data), extra)
    return Response(200, data, headers[0][1], headers[2:])


async def iterate(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def stream_file(req: Request, size: int, chunks: AsyncIterator[bytes],
                      headers: list[tuple[bytes, bytes]]) -> None:
    """Send a file of `size` bytes (read as it goes) as the response. When the read breaks
    off (a runner's stream), the response is left unfinished, so the client sees it cut
    short (a closed connection) rather than padded."""
    await req.send({"type": "http.response.start", "status": 200, "headers": headers})
    sent = 0
    try:
        async for chunk in chunks:
            sent += len(chunk)
            await req.send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (BackendError, NotInWorkspace, TooLarge, UnsafePath) as exc:
        log.warning("a file read broke off after %d of %d bytes: %s", sent, size, exc)
        return
    if sent < size:  # shrank while read: keep the promised length
        await req.send({"type": "http.response.body", "body": bytes(size - sent),
                        "more_body": True})
    await req.send({"type": "http.response.body", "body": b""})

