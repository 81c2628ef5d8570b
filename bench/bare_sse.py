"""A bare SSE app for the server comparison: `python -m bench.bare_sse --server granian`.

Answers every request (any method, any path) with a stream shaped like a
gateway turn — `?n=N` `text_delta` frames, then `done` — and nothing else: no
routing, no state, no agent. Under `bench.servers` it measures what the HTTP
server itself costs, served by the same code that serves the gateway
(`gateway.servers`), on a socket bound the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import dataclass
from urllib.parse import parse_qs

import uvloop

from gateway import servers
from gateway.cli import listen_socket
from gateway.http import Receive, Scope, Send
from wire import sse

DEFAULT_EVENTS = 20


@dataclass(frozen=True, slots=True)
class BareSse:
    """The ASGI app: `events` frames per response unless the query says `?n=`."""

    events: int = DEFAULT_EVENTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        query = parse_qs(scope["query_string"].decode())
        count = int(query.get("n", [self.events])[0])
        await send({"type": "http.response.start", "status": 200, "headers": sse.HEADERS})
        for seq in range(1, count + 1):
            await send({"type": "http.response.body", "more_body": True,
                        "body": sse.encode_event(seq, "text_delta", b'{"text":"tok "}')})
        await send({"type": "http.response.body",
                    "body": sse.encode_event(count + 1, "done", b'{"status":"ok"}')})


async def serve(server: str, host: str, port: int, events: int) -> None:
    sock = listen_socket(host, port)
    print(f"bare SSE app ({server}) listening on http://{host}:{sock.getsockname()[1]}",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    options = servers.ServeOptions(log_level="warning")
    await servers.load(server)(BareSse(events), sock, options, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_sse", description=__doc__)
    parser.add_argument("--server", choices=servers.SERVERS, default=servers.DEFAULT_SERVER)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                        help="text_delta frames per response unless the query gives ?n=")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.server, args.host, args.port, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
