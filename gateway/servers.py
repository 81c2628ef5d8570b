"""Which HTTP server runs the gateway app: hypercorn (default) or granian (an extra).

Each server lives in its own module with one entry point,
`serve(app, sock, options, stop)`: serve the ASGI app, lifespan included, on
an already listening socket until `stop` is set. The CLI binds the socket
itself, so `--port 0` and the banner work the same under either server.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.http import Receive, Scope, Send

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
SERVERS = ("hypercorn", "granian")
DEFAULT_SERVER = "hypercorn"
GRACEFUL_TIMEOUT = 5.0
"""On stop, how long open requests and connections get before the app shuts down anyway."""
EXPERIMENTAL = {
    "granian": "--server granian is experimental: a reader cut by --write-timeout is never "
               "told (its HTTP/2 stream stays open), and there is no Upgrade: h2c. "
               "Use the default (hypercorn) in production; see docs/servers.md.",
}
"""A warning the banner prints for a server that is not fit for production yet."""


REQUEST_HEAD_TIMEOUT = 10.0
"""Seconds from a request head's first byte to its end; then 408 and the connection closes."""
REQUEST_BODY_TIMEOUT = 30.0
"""Seconds a request body may pause between bytes; then the connection closes."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    log_level: str = "info"
    certfile: str | None = None
    keyfile: str | None = None
    request_head_timeout: float = REQUEST_HEAD_TIMEOUT
    request_body_timeout: float = REQUEST_BODY_TIMEOUT


Serve = Callable[[ASGIApp, socket.socket, ServeOptions, asyncio.Event], Awaitable[None]]


class ServerUnavailable(Exception):
    """The chosen server's package is not installed, or not a version we can use."""


def protocols(name: str, tls: bool) -> str:
    """What the banner says the server speaks."""
    if tls:
        return "HTTP/2 (ALPN) and HTTP/1.1"
    if name == "granian":
        return "HTTP/1.1 and HTTP/2 cleartext (prior knowledge; no Upgrade: h2c)"
    return "HTTP/1.1 and HTTP/2 cleartext (prior knowledge or Upgrade: h2c)"


def missing(name: str) -> str | None:
    """Why `name` cannot be used here, or None when it can."""
    if name == "granian" and importlib.util.find_spec("granian") is None:
        return ("--server granian needs the granian package: "
                "pip install 'ash-gateway[granian]'")
    return None


def load(name: str) -> Serve:
    """The `serve` function of server `name` (imported only when chosen)."""
    if name not in SERVERS:
        raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    reason = missing(name)
    if reason is not None:
        raise ServerUnavailable(reason)
    try:
        module = importlib.import_module(f"gateway.serve_{name}")
    except ImportError as exc:  # e.g. a granian other than the pinned 2.8.x
        raise ServerUnavailable(f"--server {name}: {exc}; pip install "
                                f"'ash-gateway[{name}]' installs a version that fits") from exc
    serve: Serve = module.serve
    return serve
