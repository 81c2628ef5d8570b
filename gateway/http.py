"""Raw-ASGI plumbing: request records, body reading with a limit, JSON responses.

No framework: a handler receives a `Request` and either returns a `Response`
or takes over the ASGI `send` itself (streaming responses).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.store import DEFAULT_TENANT

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024


class ApiError(Exception):
    """A client-visible failure: becomes `{"error": message, "statusCode": status}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message



@dataclass(slots=True)
class Request:
    scope: Scope
    receive: Receive
    send: Send
    path_params: dict[str, str] = field(default_factory=dict)
    tenant_id: str = DEFAULT_TENANT
    """The tenant the request's API key belongs to (set by the app once the key is checked);
    every row a handler reads or writes is this tenant's."""

    @property
    def method(self) -> str:
        return self.scope["method"]

    @property
    def path(self) -> str:
        return self.scope["path"]

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return value
        return None

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1"),
                              keep_blank_values=True))

    async def body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def json_object(self, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
        raw = await self.body(limit)
        if not raw.strip():
            raise ApiError(400, "request body must be a JSON object")
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from exc
        if not isinstance(value, dict):
            raise ApiError(400, "request body must be a JSON object")
        return value


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def __call__(self, send: Send) -> None:
        headers = [] if self.status == 204 else [  # 204: no body, so neither header
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
        ]
        headers.extend(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message, "statusCode": status}, status)


def string_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"`{name}` is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"`{name}` must be a string")
    if required and not value.strip():
        raise ApiError(400, f"`{name}` must not be empty")
    return value
