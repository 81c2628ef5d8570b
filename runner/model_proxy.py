"""The runner's half of the model proxy: the real credentials are added here, outside.

A sandbox's bridge relays each HTTP request its CLI makes to the bridge's loopback port
as a `model_request` frame. This module checks it (the session's token, and only POST
/v1/messages or /v1/messages/count_tokens), forwards it to the runner's upstream
(`ANTHROPIC_BASE_URL`, default the Anthropic API) with the runner's `ANTHROPIC_API_KEY`
(or the session's own anthropic credential), and sends the response back as head,
chunks as they arrive, and end: never whole.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from wire import events

log = logging.getLogger("ash.runner.model_proxy")

DEFAULT_UPSTREAM = "https://api.anthropic.com"
ALLOWED_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "content-type", "accept",
                     "user-agent", "x-stainless-retry-count", "x-stainless-timeout")
"""What the sandbox may say to the upstream; its token (x-api-key, authorization) never passes."""
DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection",
                                      "keep-alive", "content-encoding"})
"""Framing is the bridge's to choose; the body is relayed decoded."""
UPSTREAM_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)

Send = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class ModelUpstream:
    """Where model requests go and the key they carry; exists only on the runner."""

    base_url: str
    api_key: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ModelUpstream | None:
        """The runner's ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL); None without a key."""
        key = environ.get("ANTHROPIC_API_KEY")
        if not key:
            return None
        return cls(base_url_from_env(environ), key)


def base_url_from_env(environ: Mapping[str, str] = os.environ) -> str:
    return (environ.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAM).rstrip("/")


def allowed(method: str, path: str) -> bool:
    """Only Messages API calls: POST /v1/messages[/count_tokens], with any query string."""
    return method == "POST" and path.split("?", 1)[0] in ALLOWED_PATHS


def presented_token(headers: Mapping[str, str]) -> str:
    token = headers.get("x-api-key", "")
    if not token and headers.get("authorization", "").lower().startswith("bearer "):
        token = headers["authorization"][7:]
    return token


class ModelProxy:
    """One sandbox's proxy: answers its bridge's `model_request` frames through `send`."""

    def __init__(self, upstream: ModelUpstream, token: str, send: Send) -> None:
        self._upstream = upstream
        self._token = token
        self._send = send
        self._client: asyncio.Future[httpx.AsyncClient] | None = None
        self._requests: dict[str, asyncio.Task[None]] = {}

    def on_frame(self, event: events.Event) -> None:
        """A `model_request` starts a forward; a `model_cancel` stops one."""
        try:
            payload = orjson.loads(event.data)
            request_id = str(payload["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring malformed %s frame", event.type)
            return
        if event.type == events.MODEL_CANCEL:
            task = self._requests.get(request_id)
            if task is not None:
                task.cancel()
            return
        task = asyncio.get_running_loop().create_task(self._forward(request_id, payload))
        self._requests[request_id] = task
        task.add_done_callback(lambda _: self._requests.pop(request_id, None))

    async def close(self) -> None:
        tasks = list(self._requests.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await (await self._client).aclose()

    async def _http(self) -> httpx.AsyncClient:
        """The upstream client, made at the first request and in a thread: loading the CA
        bundle takes a few hundred ms, which would stall every sandbox and the runner's
        heartbeat, and a sandbox that never calls the model needs none."""
        if self._client is None:
            self._client = asyncio.ensure_future(
                asyncio.to_thread(httpx.AsyncClient, timeout=UPSTREAM_TIMEOUT))
        return await asyncio.shield(self._client)

    def _frame(self, kind: str, **payload: Any) -> None:
        self._send(kind, orjson.dumps(payload))

    def _refuse(self, request_id: str, status: int, message: str) -> None:
        body = orjson.dumps({"type": "error",
                             "error": {"type": "permission_error", "message": message}})
        self._frame(events.MODEL_RESPONSE_HEAD, id=request_id, status=status,
                    headers={"content-type": "application/json"})
        self._frame(events.MODEL_RESPONSE_CHUNK, id=request_id,
                    data=base64.b64encode(body).decode())
        self._frame(events.MODEL_RESPONSE_END, id=request_id)

    async def _forward(self, request_id: str, request: dict[str, Any]) -> None:
        method, path = str(request.get("method", "")), str(request.get("path", ""))
        headers = {str(k).lower(): str(v) for k, v in (request.get("headers") or {}).items()}
        if not hmac.compare_digest(presented_token(headers).encode(), self._token.encode()):
            self._refuse(request_id, 403, "missing or wrong session token")
            return
        if not allowed(method, path) or not path.startswith("/"):
            log.warning("refused a %r %r from a sandbox", method[:16], path[:200])
            self._refuse(request_id, 403, f"{method} {path.split('?', 1)[0]} is not allowed")
            return
        try:
            body = base64.b64decode(request.get("body") or "", validate=True)
        except (binascii.Error, ValueError):
            self._refuse(request_id, 400, "request body is not base64")
            return
        upstream_headers = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
        upstream_headers["x-api-key"] = self._upstream.api_key
        upstream_headers["accept-encoding"] = "identity"
        error: str | None = None
        try:
            client = await self._http()
            upstream = client.build_request(method, self._upstream.base_url + path,
                                            headers=upstream_headers, content=body)
            response = await client.send(upstream, stream=True)
            try:
                self._frame(events.MODEL_RESPONSE_HEAD, id=request_id,
                            status=response.status_code,
                            headers={k: v for k, v in response.headers.items()
                                     if k.lower() not in DROPPED_RESPONSE_HEADERS})
                async for chunk in response.aiter_bytes():
                    self._frame(events.MODEL_RESPONSE_CHUNK, id=request_id,
                                data=base64.b64encode(chunk).decode())
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            error = f"upstream: {type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        finally:
            with contextlib.suppress(Exception):
                self._frame(events.MODEL_RESPONSE_END, id=request_id,
                            **({"error": error} if error else {}))
