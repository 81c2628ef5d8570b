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
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.event_guard import replay_frames
from gateway.http import Request
from gateway.live import Frame, Subscriber
from gateway.metrics import GatewayMetrics, StreamCounters
from gateway.store import Store
from runner import timing
from runner.timing import TIMING
from wire import events, sse
from wire import timing as wt

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


class SseWriter:
    """An SSE response. A client that accepts nothing for `write_timeout` seconds is
    cut: one watchdog timer per response looks at the write in progress, so a
    write costs a clock read and two stores instead of a timer of its own."""

    def __init__(self, request: Request, settings: StreamSettings,
                 metrics: GatewayMetrics | None = None, request_in: float = 0.0) -> None:
        self.request = request
        self.settings = settings
        self.metrics = metrics
        self.counters = metrics.streams if metrics is not None else StreamCounters()
        self.request_in = request_in
        """`time.perf_counter()` when the message request came in (0: not a turn's)."""
        self._writing_since: float | None = None
        self._writer: asyncio.Task[object] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._cut = False

    async def start(self) -> None:
        await self.request.send(
            {"type": "http.response.start", "status": 200, "headers": sse.HEADERS}
        )
        self.counters.open += 1
        self._writer = asyncio.current_task()
        self._arm()

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        self._writing_since = loop.time()
        try:
            await self.request.send(
                {"type": "http.response.body", "body": data, "more_body": True}
            )
        except asyncio.CancelledError:
            task = self._writer
            if self._cut and task is not None and task.uncancel() == 0:
                self.counters.write_timeout_cuts += 1
                raise ClientGone(
                    f"client read nothing for {self.settings.write_timeout:g} s"
                ) from None
            raise
        finally:
            self._writing_since = None
        self.counters.bytes += len(data)

    def _arm(self, delay: float | None = None) -> None:
        timeout = self.settings.write_timeout
        self._watchdog = asyncio.get_running_loop().call_later(
            timeout if delay is None else delay, self._check)

    def _check(self) -> None:
        """Cut the client if a write has waited `write_timeout`; else look again when the
        write in progress (or any later one) could reach it."""
        if self._writer is None or self._writer.done():
            self._watchdog = None
            return
        since = self._writing_since
        if since is None:
            self._arm()
            return
        waited = asyncio.get_running_loop().time() - since
        if waited < self.settings.write_timeout:
            self._arm(self.settings.write_timeout - waited)
            return
        self._cut = True
        self._writer.cancel()

    async def finish(self) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await self.request.send({"type": "http.response.body", "body": b""})

    def observe(self, *, first: bool) -> None:
        """Record the time since the request came in: to the turn's first agent frame, or
        to its `done` (once per turn, never per event)."""
        if self.metrics is None or not self.request_in:
            return
        elapsed = time.perf_counter() - self.request_in
        (self.metrics.first_event if first else self.metrics.turn).observe(elapsed)

    def close(self) -> None:
        """Stop the watchdog (the response is over)."""
        if self._writer is not None:
            self.counters.open -= 1
            self._writer = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def _has_agent_frame(frames: list[Frame]) -> bool:
    """Whether a batch holds a frame from the agent (the turn's `session_start` is ours)."""
    return any(frame.type != events.SESSION_START for frame in frames)


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
    turn_id: str = "",
) -> None:
    """Replay logged events in (replay_after, replay_until], then live ones after that.

    With `until_done` the response ends after the first `done`; otherwise it stays
    open (keep-alive comments) until the client leaves or the session ends. `turn_id`
    names the turn whose first-token frame is a timing point.
    """
    first_pending = TIMING and bool(turn_id)
    observe_first = writer.metrics is not None and writer.request_in > 0
    counters = writer.counters
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
                await writer.write(replay_frames(rows))
                last = rows[-1].seq
            last = max(last, replay_until)
        while True:
            try:
                frames = await subscriber.take(idle_limit=writer.settings.keepalive_interval)
            except TimeoutError:
                await writer.write(sse.encode_comment("keep-alive"))
                continue
            if frames is None:
                if not watcher.done():
                    await writer.finish()  # the session ended or its turn failed
                return
            chunk: list[bytes] = []
            done = False
            token = False
            for frame in frames:
                if frame.seq <= last:
                    continue
                chunk.append(frame.sse)
                last = frame.seq
                if first_pending and frame.type in wt.TOKEN_EVENTS:
                    token = True
                if until_done and frame.type == events.DONE:
                    done = True
                    break
            if chunk:
                counters.events += len(chunk)
                await writer.write(chunk[0] if len(chunk) == 1 else b"".join(chunk))
                if observe_first and (token or done or _has_agent_frame(frames)):
                    observe_first = False
                    writer.observe(first=True)
            if token:
                first_pending = False
                timing.point(wt.GATEWAY_FIRST_FRAME_WRITTEN, turn_id, session_id)
            if done:
                writer.observe(first=False)
                await writer.finish()
                return
    except ClientGone as exc:
        log.info("cut a reader of session %s: %s", session_id, exc)
    finally:
        writer.close()
        watcher.cancel()
