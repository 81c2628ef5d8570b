"""The bridge's half of the model proxy: an HTTP/1.1 listener on the sandbox's loopback.

The CLI's ANTHROPIC_BASE_URL points here. Each request goes to the runner as a
`model_request` frame (the runner checks it and adds the real key, `runner.model_proxy`);
the response comes back as head, chunks and end frames and is written to the CLI as they
arrive, chunked. A CLI that hangs up mid-response cancels the upstream call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from wire import events
from wire.events import Event

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
Emit = Callable[[str, bytes], Awaitable[None]]
Request = tuple[str, str, dict[str, str], bytes]


class BadRequest(ValueError):
    """The CLI sent something this small server does not speak."""


@dataclass(slots=True)
class _Pending:
    frames: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)


def listen_address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 0


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request from the connection; None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise BadRequest("connection closed mid-request") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _ = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest("bad request line") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
            if len(body) > MAX_BODY:
                raise BadRequest("request body too large")
        return method, target, headers, bytes(body)
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise BadRequest("request body too large")
    return method, target, headers, await reader.readexactly(length)


class ModelRelay:
    """Serves the CLI's model requests by relaying them over the bridge socket."""

    def __init__(self) -> None:
        self._emit: Emit | None = None
        self._attached = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    def attach(self, emit: Emit) -> None:
        """Requests wait for this: the bridge socket's writer exists only once serving."""
        self._emit = emit
        self._attached.set()

    def dispatch(self, frame: Event) -> None:
        """A `model_response_*` frame from the runner, to the connection awaiting it."""
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
            pending = self._pending.get(str(orjson.loads(frame.data).get("id")))
            if pending is not None:
                pending.frames.put_nowait(frame)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_request(reader)
                if request is None or not await self._relay(reader, writer, *request):
                    break
        except (BadRequest, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            with contextlib.suppress(ConnectionError):
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                             b"connection: close\r\n\r\n")
                await writer.drain()
            print(f"ash-bridge: model relay: {exc}", file=sys.stderr)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     method: str, target: str, headers: dict[str, str], body: bytes) -> bool:
        """Relay one request; True if the connection can carry another."""
        await self._attached.wait()
        assert self._emit is not None
        request_id = secrets.token_hex(8)
        pending = self._pending[request_id] = _Pending()
        hangup = asyncio.ensure_future(reader.read(1))
        finished = False
        try:
            await self._emit(events.MODEL_REQUEST, orjson.dumps({
                "id": request_id, "method": method, "path": target, "headers": headers,
                "body": base64.b64encode(body).decode()}))
            started = False
            while True:
                next_frame = asyncio.ensure_future(pending.frames.get())
                await asyncio.wait({next_frame, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if not next_frame.done():
                    next_frame.cancel()
                    return False  # the CLI hung up (or pipelined, which this does not serve)
                frame = next_frame.result()
                data: dict[str, Any] = orjson.loads(frame.data)
                if frame.type == events.MODEL_RESPONSE_HEAD:
                    started = True
                    lines = [f"HTTP/1.1 {int(data['status'])} Relayed"]
                    lines += [f"{k}: {v}" for k, v in (data.get("headers") or {}).items()]
                    lines += ["transfer-encoding: chunked", "", ""]
                    writer.write("\r\n".join(lines).encode("latin-1"))
                elif frame.type == events.MODEL_RESPONSE_CHUNK:
                    chunk = base64.b64decode(data.get("data") or "")
                    if chunk:
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                elif frame.type == events.MODEL_RESPONSE_END:
                    finished = True
                    if data.get("error"):
                        if not started:
                            message = orjson.dumps({"type": "error", "error": {
                                "type": "api_error", "message": data["error"]}})
                            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: "
                                         b"application/json\r\ncontent-length: %d\r\n"
                                         b"connection: close\r\n\r\n%s" % (len(message), message))
                            await writer.drain()
                        return False
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    return True
                await writer.drain()
        finally:
            self._pending.pop(request_id, None)
            if not hangup.done():
                hangup.cancel()
            if not finished:
                with contextlib.suppress(ConnectionError):
                    await self._emit(events.MODEL_CANCEL, orjson.dumps({"id": request_id}))
