"""Serving the gateway app with hypercorn (the default server)."""

from __future__ import annotations

import asyncio
import socket
import sys

import hypercorn.asyncio
from hypercorn.config import Config as HypercornConfig

from gateway import hypercorn_h2
from gateway.servers import GRACEFUL_TIMEOUT, ASGIApp, ServeOptions


def hypercorn_config(options: ServeOptions, sock: socket.socket) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"fd://{sock.fileno()}"]
    hc.accesslog = None
    hc.errorlog = "-"
    hc.loglevel = options.log_level.upper()
    hc.keep_alive_timeout = 75
    # hypercorn ends a connection after 1,000 requests by default, and its HTTP/2 GOAWAY
    # cuts the streams still open on it: a client multiplexing many sessions' SSE streams
    # over one connection would lose them mid-turn.
    hc.keep_alive_max_requests = sys.maxsize
    hc.graceful_timeout = GRACEFUL_TIMEOUT
    # Read by gateway.hypercorn_h2.AshH11Protocol (hypercorn has no such deadlines).
    hc.ash_head_timeout = options.request_head_timeout  # type: ignore[attr-defined]
    hc.ash_body_timeout = options.request_body_timeout  # type: ignore[attr-defined]
    if options.certfile and options.keyfile:
        hc.certfile = options.certfile
        hc.keyfile = options.keyfile
        hc.alpn_protocols = ["h2", "http/1.1"]
    return hc


async def serve(app: ASGIApp, sock: socket.socket, options: ServeOptions,
                stop: asyncio.Event) -> None:
    """Serve `app` on the listening `sock` until `stop` is set (lifespan included)."""
    hypercorn_h2.install()
    await hypercorn.asyncio.serve(app, hypercorn_config(options, sock),  # type: ignore[arg-type]
                                  shutdown_trigger=stop.wait)
