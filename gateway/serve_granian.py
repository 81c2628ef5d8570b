"""Serving the gateway app with granian's embedded server (`--server granian`, experimental).

granian's embedded server runs its Rust HTTP stack on its own thread and calls
the app on *our* event loop (uvloop), in this process: the gateway holds its
sessions, live feeds and database in-process, so it must be exactly one
worker, never granian's multi-process mode.

We bind the listening socket ourselves (the CLI's `listen_socket`) and hand
granian its descriptor: `--port 0` then works, the banner shows the bound
port, and both servers bind the same way (granian's own binding sets
SO_REUSEPORT, which would let a second gateway share the port silently).

We drive the app's lifespan ourselves instead of letting granian do it: on
stop, granian waits for every open connection to close — an idle HTTP/2
client that keeps its connection holds the process forever — and only then
runs the shutdown. Here the app shuts down after GRACEFUL_TIMEOUT whatever
the clients do, as under hypercorn. See docs/servers.md for what else differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from granian._granian import SocketHolder
from granian.asgi import LifespanProtocol
from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from gateway.servers import GRACEFUL_TIMEOUT, ASGIApp, ServeOptions

log = logging.getLogger("ash.gateway")

# granian logs to stdout by default; ours is the banner, which callers parse.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"_granian": {"handlers": [], "propagate": True},
                "granian.access": {"handlers": [], "propagate": True}},
}


class _OnSocket(Server):
    """The embedded server, serving on a socket that is already listening."""

    def __init__(self, app: ASGIApp, sock: socket.socket, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(app, address=host, port=port, **kwargs)
        self._listener = sock

    def _init_shared_socket(self) -> None:
        # (fd, is_uds, backlog): how granian itself hands a bound socket to a worker.
        # The holder owns the descriptor it is given, so it gets a duplicate.
        self._ssp = None
        self._shd = SocketHolder(os.dup(self._listener.fileno()), False, 1024)
        self._sfd = self._shd.get_fd()


def _server(app: ASGIApp, sock: socket.socket, options: ServeOptions) -> _OnSocket:
    tls = options.certfile is not None and options.keyfile is not None
    return _OnSocket(
        app, sock,
        interface=Interfaces.ASGINL,  # no lifespan: serve() runs it
        http=HTTPModes.auto,
        websockets=False,
        log_level=LogLevels(options.log_level),
        log_dictconfig=LOG_CONFIG,
        ssl_cert=Path(options.certfile) if tls and options.certfile else None,
        ssl_key=Path(options.keyfile) if tls and options.keyfile else None,
        ssl_protocol_min=SSLProtocols.tls12,
        # The head deadline; granian has none for a body's pauses nor a control-frame budget.
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(options.request_head_timeout * 1000))),
    )


async def serve(app: ASGIApp, sock: socket.socket, options: ServeOptions,
                stop: asyncio.Event) -> None:
    """Serve `app` on the listening `sock` until `stop` is set (lifespan included)."""
    lifespan = LifespanProtocol(app)
    await lifespan.startup()
    if lifespan.interrupt:
        raise RuntimeError("the app's lifespan startup failed") from lifespan.exc
    server = _server(app, sock, options)
    loop = asyncio.get_running_loop()
    serving = loop.create_task(server.serve())
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            server.stop()
            _, pending = await asyncio.wait({serving}, timeout=GRACEFUL_TIMEOUT)
            if pending:
                log.warning("clients still connected after %g s; shutting down anyway",
                            GRACEFUL_TIMEOUT)
    finally:
        stopping.cancel()
        await lifespan.shutdown()
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
    if not serving.cancelled():
        serving.result()  # granian's own failure, if it had one
