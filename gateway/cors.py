"""CORS for browser clients, from a configured origin list (`ASH_ALLOWED_ORIGINS`,
comma-separated; `*` allows any origin).

Unset, or for an origin not listed, responses carry no CORS headers at all (the browser
then refuses the page the response). A preflight (`OPTIONS` with `Origin` and
`Access-Control-Request-Method`) is always answered 204 without the API key — browsers
send it without credentials — with the allow headers only for a listed origin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = b"authorization, content-type, last-event-id, accept"
EXPOSE_HEADERS = b"retry-after, content-disposition, content-length"
MAX_AGE = b"600"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[bytes] = frozenset()
    any_origin: bool = False

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.origins)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> CorsPolicy:
        listed = [item.strip().rstrip("/") for item in
                  env.get("ASH_ALLOWED_ORIGINS", "").split(",") if item.strip()]
        return cls(frozenset(item.encode() for item in listed if item != "*"),
                   "*" in listed)

    def allows(self, origin: bytes | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """For an actual request from an allowed origin."""
        return [(b"access-control-allow-origin", origin), (b"vary", b"origin"),
                (b"access-control-expose-headers", EXPOSE_HEADERS)]

    def preflight_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        if not self.allows(origin):
            return []
        assert origin is not None
        return [(b"access-control-allow-origin", origin), (b"vary", b"origin"),
                (b"access-control-allow-methods", ALLOW_METHODS),
                (b"access-control-allow-headers", ALLOW_HEADERS),
                (b"access-control-max-age", MAX_AGE)]


def is_preflight(method: str, origin: bytes | None,
                 request_method: bytes | None) -> bool:
    return method == "OPTIONS" and origin is not None and request_method is not None
