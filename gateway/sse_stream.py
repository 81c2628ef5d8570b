"""Writing a session's events to one client as an SSE response.

The I/O edge of the live feed: replay from the log, then live frames from a
`Subscriber`, with a keep-alive comment when idle and a write timeout that cuts
a client that stopped reading (its stream is reset; the turn goes on and the
client can rejoin with Last-Event-ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.http import Request
from gateway.live import Subscriber
from gateway.store import Store
from wire import events, sse

log = logging.getLogger("ash.stream")

REPLAY_PAGE = 500


@dataclass(frozen=True, slots=True)
class StreamSettings:
    write_timeout: float = 30.0
    """A client whose stream accepts nothing for this long is cut."""
    keepalive_interval: float = 15.0
    """An idle stream gets a comment this often, so proxies keep it open."""


class ClientGone(Exception):
    """The client disconnected or was cut after the write timeout."""


@dataclass
class SseWriter:
    request: Request
    settings: StreamSettings

    async def start(self) -> None:
        await self.request.send(
            {"type": "http.response.start", "status": 200, "headers": sse.HEADERS}
        )

    async def write(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.settings.write_timeout):
                await self.request.send(
                    {"type": "http.response.body", "body": data, "more_body": True}
                )
        except TimeoutError:
            raise ClientGone(
                f"client read nothing for {self.settings.write_timeout:g} s"
            ) from None

    async def finish(self) -> None:
        with contextlib.suppress(Exception):
            await self.request.send({"type": "http.response.body", "body": b""})


async def _watch_disconnect(request: Request, subscriber: Subscriber,
                            on_disconnect: Callable[[], object] | None) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    subscriber.close()
    if on_disconnect is not None:
        on_disconnect()


async def stream_session(
    writer: SseWriter,
    subscriber: Subscriber,
    *,
    store: Store | None = None,
    session_id: str = "",
    replay_after: int = 0,
    replay_until: int = 0,
    until_done: bool,
    on_disconnect: Callable[[], object] | None = None,
) -> None:
    """Replay logged events in (replay_after, replay_until], then live ones after that.

    With `until_done` the response ends after the first `done`; otherwise it stays
    open (keep-alive comments) until the client leaves or the session ends.
    """
    watcher = asyncio.get_running_loop().create_task(
        _watch_disconnect(writer.request, subscriber, on_disconnect)
    )
    try:
        last = replay_after
        if store is not None:
            while last < replay_until:
                rows = store.events_after(session_id, last, REPLAY_PAGE)
                rows = [row for row in rows if row.seq <= replay_until]
                if not rows:
                    break
                for row in rows:
                    await writer.write(sse.encode_event(row.seq, row.type, row.data))
                last = rows[-1].seq
            last = max(last, replay_until)
        while True:
            try:
                frame = await subscriber.get(idle_limit=writer.settings.keepalive_interval)
            except TimeoutError:
                await writer.write(sse.encode_comment("keep-alive"))
                continue
            if frame is None:
                if not watcher.done():
                    await writer.finish()  # the session ended or its turn failed
                return
            if frame.seq <= last:
                continue
            await writer.write(frame.sse)
            last = frame.seq
            if until_done and frame.type == events.DONE:
                await writer.finish()
                return
    except ClientGone as exc:
        log.info("cut a reader of session %s: %s", session_id, exc)
    finally:
        watcher.cancel()
