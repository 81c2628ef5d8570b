"""The ASGI application: routing, authentication, error mapping, lifespan."""

from __future__ import annotations

import hmac
import logging
import time

from gateway.api.table import Route, compile_routes
from gateway.auth import KeyRing
from gateway.context import Gateway
from gateway.cors import CorsPolicy, is_preflight
from gateway.http import ApiError, Message, Receive, Request, Scope, Send, error_response
from gateway.rate_limit import RateLimiter, RateLimitSettings, Refusal
from runner.backend import BackendError
from wire.internal_auth import REFUSAL as INTERNAL_REFUSAL
from wire.internal_auth import SECRET_ENV

log = logging.getLogger("ash.gateway")

INTERNAL_PREFIX = "/api/internal/"
"""Routes for the deployment's own services: they take the internal secret, not a key."""
KEY_REFUSAL = "missing or invalid API key (Authorization: Bearer <key>)"


class GatewayApp:
    def __init__(self, gateway: Gateway, keys: KeyRing, internal_secret: str | None = None,
                 *, rate_limits: RateLimitSettings | None = None,
                 cors: CorsPolicy | None = None) -> None:
        self.gateway = gateway
        self.keys = keys
        self.internal_secret = internal_secret.encode() if internal_secret else None
        self.routes: list[Route] = compile_routes()
        settings = rate_limits or RateLimitSettings()
        self.limiter = RateLimiter(settings) if settings.enabled else None
        self.cors = cors if cors is not None and cors.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS" and await self._preflight(scope, send):
            return
        if self.cors is not None:
            send = self._with_cors(scope, send)
        request = Request(scope, receive, send)
        try:
            if request.path.startswith("/api/") or request.path == "/metrics":
                self._admit(request)  # /metrics is behind the key, as in the reference
            route = self._match(request)
            response = await route.handler(self.gateway, request)
        except RateLimited as exc:
            response = error_response(429, exc.message)
            response.headers.append((b"retry-after", str(exc.retry_after).encode()))
        except ApiError as exc:
            response = error_response(exc.status, exc.message)
        except BackendError as exc:
            response = error_response(503, f"sandbox backend: {exc}")
        except Exception:
            # %r: the path is percent-decoded, so a client can put a line break in it
            log.exception("unhandled error on %s %r", scope["method"], scope["path"])
            response = error_response(500, "internal error")
        if response is not None:
            await response(request.send)

    def _admit(self, request: Request) -> None:
        """The rate limits (by address before the key, by key after) and the API key."""
        limiter = self.limiter
        if limiter is not None:
            client = request.scope.get("client")
            _refuse(limiter.check(request.method, request.path,
                                  ("addr", client[0] if client else "")))
        self._authenticate(request)
        if limiter is not None:
            _refuse(limiter.check(request.method, request.path, ("key", request.key_id)))

    async def _preflight(self, scope: Scope, send: Send) -> bool:
        """Answer a CORS preflight (204, no key needed; the allow headers only for a listed
        origin); False when the OPTIONS request is no preflight."""
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if not is_preflight(scope["method"], origin,
                            headers.get(b"access-control-request-method")):
            return False
        allowed = self.cors.preflight_headers(origin) if self.cors is not None else []
        await send({"type": "http.response.start", "status": 204, "headers": allowed})
        await send({"type": "http.response.body", "body": b""})
        return True

    def _with_cors(self, scope: Scope, send: Send) -> Send:
        """The `send` that adds the CORS headers to the response for an allowed origin."""
        assert self.cors is not None
        origin = dict(scope["headers"]).get(b"origin")
        if not self.cors.allows(origin):
            return send
        assert origin is not None
        extra = self.cors.response_headers(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return send_with_cors

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


class RateLimited(ApiError):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(429, refusal.message)
        self.retry_after = refusal.retry_after


def _refuse(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise RateLimited(refusal)
