"""The shared secret that authenticates gateway <-> runner gRPC calls, both ways.

Every call carries the deployment's secret (ASH_INTERNAL_SECRET) in one metadata
entry; the receiving server's interceptor refuses a call without it
(UNAUTHENTICATED) before any handler runs. It travels once per RPC, so a
long-lived stream pays for it once, not per message. The standard health
service stays open so that plain health probes work.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

SECRET_ENV = "ASH_INTERNAL_SECRET"
METADATA_KEY = "x-ash-internal-secret"
REFUSAL = "missing or wrong internal secret (ASH_INTERNAL_SECRET)"
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods callable without the secret."""

Metadata = tuple[tuple[str, str], ...]


def call_metadata(secret: str) -> Metadata:
    """The metadata to pass with every call to the other side."""
    return ((METADATA_KEY, secret),)


class SecretCheck(grpc.aio.ServerInterceptor):
    """Refuses every call (health checks aside) whose metadata lacks the secret,
    from its metadata alone: the refused call's body is never read."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError(f"an empty {SECRET_ENV} authenticates nobody")
        self._secret = secret.encode()

    def allows(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == METADATA_KEY:
                presented = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(presented, self._secret)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(OPEN_PREFIXES) or self.allows(
            handler_call_details.invocation_metadata  # type: ignore[attr-defined]
        ):
            return handler
        return _refusing(handler)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler that fails the call with UNAUTHENTICATED without reading its request.

    It is request-streaming whatever `handler` is (the wire does not tell a unary
    request from a stream of one), has no deserializer, and aborts before it would
    iterate: gRPC then reads no message of the call, so an unauthenticated peer's
    body never reaches memory beyond the transport's flow-control window.
    """

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)

    make = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler)
    return make(refuse, response_serializer=handler.response_serializer)
