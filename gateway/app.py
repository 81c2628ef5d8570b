"""The ASGI application: routing, authentication, error mapping, lifespan."""

from __future__ import annotations

import hmac
import logging
import time

from gateway.api.table import Route, compile_routes
from gateway.auth import KeyRing
from gateway.context import Gateway
from gateway.http import ApiError, Receive, Request, Scope, Send, error_response
from runner.backend import BackendError
from wire.internal_auth import REFUSAL as INTERNAL_REFUSAL
from wire.internal_auth import SECRET_ENV

log = logging.getLogger("ash.gateway")

INTERNAL_PREFIX = "/api/internal/"
"""Routes for the deployment's own services: they take the internal secret, not a key."""
KEY_REFUSAL = "missing or invalid API key (Authorization: Bearer <key>)"


class GatewayApp:
    def __init__(self, gateway: Gateway, keys: KeyRing,
                 internal_secret: str | None = None) -> None:
        self.gateway = gateway
        self.keys = keys
        self.internal_secret = internal_secret.encode() if internal_secret else None
        self.routes: list[Route] = compile_routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            if request.path.startswith("/api/"):
                self._authenticate(request)
            route = self._match(request)
            response = await route.handler(self.gateway, request)
        except ApiError as exc:
            response = error_response(exc.status, exc.message)
        except BackendError as exc:
            response = error_response(503, f"sandbox backend: {exc}")
        except Exception:
            # %r: the path is percent-decoded, so a client can put a line break in it
            log.exception("unhandled error on %s %r", scope["method"], scope["path"])
            response = error_response(500, "internal error")
        if response is not None:
            await response(send)

    def _authenticate(self, request: Request) -> None:
        """Set the request's tenant from its key (401 without a valid one). Internal
        routes take the internal secret instead; a gateway without one has none (404)."""
        authorization = request.header(b"authorization")
        if request.path.startswith(INTERNAL_PREFIX):
            if self.internal_secret is None:
                if self.keys.authenticate(authorization) is None:
                    raise ApiError(401, KEY_REFUSAL)
                raise ApiError(404, f"no route for {request.method} {request.path}: internal "
                                    f"routes are disabled, this gateway has no {SECRET_ENV}")
            presented = (authorization or b"").removeprefix(b"Bearer ").strip()
            if not (authorization or b"").startswith(b"Bearer ") or not hmac.compare_digest(
                    presented, self.internal_secret):
                raise ApiError(401, INTERNAL_REFUSAL)
            return
        caller = self.keys.authenticate(authorization)
        if caller is None:
            raise ApiError(401, KEY_REFUSAL)
        request.tenant_id = caller.tenant_id
        request.key_id = caller.key_id

    def _match(self, request: Request) -> Route:
        path_matched = False
        for route in self.routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            path_matched = True
            if route.method == request.method:
                request.path_params = match.groupdict()
                return route
        if path_matched:
            raise ApiError(405, f"method {request.method} not allowed on {request.path}")
        raise ApiError(404, f"no route for {request.method} {request.path}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.gateway.started_at = time.time()
                self.gateway.start_background_work()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
