"""Our fixes to hypercorn's HTTP/2 and HTTP/1.1 protocols, kept in this one module.

hypercorn 0.18 gets three things wrong that matter for long SSE streams; see
docs/hypercorn-h2-flow-control.md for the upstream report.

1. **Flow control never pushes back.** `StreamBuffer.pop` releases a waiting
   writer when the *chunk it just popped* is small — and with the peer's window
   at zero it pops an empty chunk — instead of when the *buffer* is low. So an
   app's `send` never blocks on a reader that does not read, and every event is
   buffered in server memory. `FlowControlledStreamBuffer` releases writers only
   once the buffer has drained below the low-water mark.
2. **A reset or vanished client leaves the app's `send` stuck.** Closing a
   stream (RST_STREAM, connection lost) never wakes a writer waiting on that
   stream's full buffer. `AshH2Protocol._close_stream` closes the buffer, which
   wakes it; later sends on that stream return at once (the app learns of the
   disconnect from `receive()`).
   An app that ends its response without finishing the body (say, after a write
   timeout) gets its stream reset, so the client is told instead of left waiting.
3. **DATA for an answered stream kills the connection.** `_handle_events` looks
   the stream up with `self.streams[event.stream_id]`; the KeyError escapes the
   connection's task group and every other stream on the connection dies. That
   happens whenever a handler answers before reading the whole body (a 401 or
   413) while the client is still sending it. Such DATA is now discarded, its
   flow-control credit still returned to the peer.

And one change for latency: 4. **Every write waits for another task.** hypercorn
queues each DATA write in the stream's buffer for a separate sending task, so an
event reaches the socket only after the loop has run that task — after the app
has written everything else it had ready. A write to a stream whose buffer is
empty and whose flow-control window has room for it now goes out at once, from
the writing task; anything else takes the buffered path as before, so flow
control and ordering are unchanged.

And two bounds hypercorn lacks, against clients that cost much and ask nothing:

5. **Control-frame floods.** A peer may send SETTINGS, PING, PRIORITY, RST_STREAM,
   WINDOW_UPDATE, empty DATA or unknown frames as fast as it can; each one costs the
   event loop (and every other client on it) work, and asks for no response. Each
   connection gets a budget per second (`CONTROL_FRAMES_PER_SECOND`, and for
   WINDOW_UPDATE, which a reader sends as it takes our DATA, `WINDOW_UPDATES_PER_SECOND`
   plus two per DATA frame sent to it); beyond it the connection gets GOAWAY
   ENHANCE_YOUR_CALM and is closed a second later (`CALM_LINGER`). A request flood
   (rapid reset) costs a HEADERS frame each and is bounded by the stream limit; its
   RST_STREAM frames count in the budget too.
6. **No deadline for a request's head or body (HTTP/1.1).** hypercorn's only bound on
   a request head that trickles in is its keep-alive timeout (75 s here) and on a body
   none at all; `read_timeout` would also cut an SSE client, which sends nothing while
   it reads. `AshH11Protocol` gives a head `head_timeout` seconds from its first byte
   (then a 408 and the connection closes), and a body `body_timeout` seconds of
   silence between its chunks (then the connection closes; the app sees a disconnect).

And one for HTTP/1.1 clients: 7. **No reason phrase.** hypercorn builds its `h11.Response`
without a `reason`, so every status line reads `HTTP/1.1 200 ` — valid, but `h2load --h1`
(nghttp2) counts each such response as a failed request. `AshH11Protocol` gives every
response its standard phrase (`HTTP/1.1 200 OK`).

`install()` swaps these classes into hypercorn's modules, which is where
hypercorn looks them up when a connection or stream starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import h11
import hypercorn.protocol
import hypercorn.protocol.h2 as hypercorn_h2
import orjson
import priority
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.events import Body, Data
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h2 import BUFFER_LOW_WATER, H2Protocol, StreamBuffer
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import H11SendableEvent

from gateway.servers import REQUEST_BODY_TIMEOUT, REQUEST_HEAD_TIMEOUT

CONTROL_FRAMES_PER_SECOND = 1_000
"""SETTINGS, PING, PRIORITY, RST_STREAM, empty DATA and unknown frames a connection may
send per second; a browser or SDK sends a handful."""
WINDOW_UPDATES_PER_SECOND = 10_000
"""WINDOW_UPDATE frames a connection may send per second beyond two for each DATA frame
sent to it this second and the last (a reader returns credit for the stream and for the
connection as it reads: one of many fast streams sends many)."""
_CONTROL_EVENTS = (h2.events.RemoteSettingsChanged, h2.events.SettingsAcknowledged,
                   h2.events.PingReceived, h2.events.PingAckReceived,
                   h2.events.PriorityUpdated, h2.events.StreamReset,
                   h2.events.UnknownFrameReceived)
_CALM_DOWN = b"too many control frames"
CALM_LINGER = 1.0
"""Seconds a connection sent GOAWAY for a flood stays open before it closes, reading
nothing (the peer's sends back up in TCP), so that the GOAWAY reaches the peer before a
close with unread input resets the connection."""


class FlowControlledStreamBuffer(StreamBuffer):
    """A stream's outgoing buffer whose writers wait until it is actually low."""

    async def pop(self, max_length: int) -> bytes:
        length = min(len(self.buffer), max_length)
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        if len(self.buffer) < BUFFER_LOW_WATER:
            await self._paused.set()
        if not self.buffer:
            await self._is_empty.set()
        return data


class AshH2Protocol(H2Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._budget_started = 0.0
        self._control_frames = 0
        self._window_updates = 0
        self._data_sent = 0
        """DATA frames sent this second (at most: a send attempt counts)."""
        self._data_sent_before = 0
        """... and in the second before it."""

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, (Body, Data)) and event.data and self._send_now(event):
            await self._flush()
            return
        await super().stream_send(event)

    def _send_now(self, event: Body | Data) -> bool:
        """Hand `event`'s data to h2 right away if nothing of its stream is queued and
        the peer's window takes all of it in one frame; False to take the queued path."""
        buffer = self.stream_buffers.get(event.stream_id)
        if buffer is None or buffer.buffer or buffer._complete:
            return False
        connection = self.connection
        try:
            room = min(connection.local_flow_control_window(event.stream_id),
                       connection.max_outbound_frame_size)
            if len(event.data) > room:
                return False
            connection.send_data(event.stream_id, event.data)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return False
        self._data_sent += 1
        return True

    async def _send_data(self, stream_id: int) -> None:
        self._data_sent += 1
        await super()._send_data(stream_id)

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        if self._over_budget(events):
            self.connection.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                             additional_data=_CALM_DOWN)
            await self._flush()
            await asyncio.sleep(CALM_LINGER)  # the connection's reads wait meanwhile
            await self.send(Closed())
            return
        # Handling an event can finish a stream (a new request starts its app
        # task, which may answer at once), so whether a DATA event's stream is
        # still open is decided only after every earlier event was handled.
        run: list[h2.events.Event] = []
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                if run:
                    await super()._handle_events(run)
                    run = []
                if event.stream_id not in self.streams:
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    continue
            run.append(event)
        await super()._handle_events(run)  # also flushes any window updates queued above

    def _over_budget(self, events: list[h2.events.Event]) -> bool:
        """Count this read's control frames; True once this second's budget is spent."""
        control = updates = 0
        for event in events:
            if isinstance(event, _CONTROL_EVENTS):
                control += 1
            elif isinstance(event, h2.events.WindowUpdated):
                updates += 1
            elif (isinstance(event, h2.events.DataReceived) and not event.data
                  and not event.stream_ended):
                control += 1
        if not control and not updates:
            return False
        now = asyncio.get_running_loop().time()
        if now - self._budget_started >= 1.0:
            last_second = now - self._budget_started < 2.0
            self._budget_started = now
            self._control_frames = self._window_updates = 0
            self._data_sent_before = self._data_sent if last_second else 0
            self._data_sent = 0
        self._control_frames += control
        self._window_updates += updates
        credit = 2 * (self._data_sent + self._data_sent_before)
        return (self._control_frames > CONTROL_FRAMES_PER_SECOND
                or self._window_updates > WINDOW_UPDATES_PER_SECOND + credit)

    async def _close_stream(self, stream_id: int) -> None:
        await super()._close_stream(stream_id)
        buffer = self.stream_buffers.get(stream_id)
        if buffer is None:
            return
        if not buffer._complete:
            # The app ended its response without finishing it, or the peer went away.
            with contextlib.suppress(h2.exceptions.StreamClosedError,
                                     h2.exceptions.ProtocolError):
                self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                await self._flush()
        await buffer.close()
        # Let the sending task visit the stream once more, so it drops its buffer
        # and priority entry instead of keeping them until the connection ends.
        with contextlib.suppress(priority.MissingStreamError):
            self.priority.unblock(stream_id)
        await self.has_data.set()


REASON_PHRASES: dict[int, bytes] = {status.value: status.phrase.encode()
                                    for status in http.HTTPStatus}
"""Each standard status code's reason phrase, for the HTTP/1.1 status line."""


class AshH11Protocol(H11Protocol):
    """HTTP/1.1 with a deadline for a request's head and for each pause in its body, and a
    reason phrase in every status line.

    The deadlines come from the hypercorn config's `ash_head_timeout` and
    `ash_body_timeout` (set by `gateway.serve_hypercorn`). One timer at most per
    connection, re-armed lazily: a body chunk only notes the time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout: float = getattr(self.config, "ash_head_timeout",
                                             REQUEST_HEAD_TIMEOUT)
        self._body_timeout: float = getattr(self.config, "ash_body_timeout",
                                             REQUEST_BODY_TIMEOUT)
        self._timer: asyncio.TimerHandle | None = None
        self._timing: str = ""
        """What the timer bounds: "head", "body" or "" (nothing)."""
        self._last_body_byte = 0.0

    async def handle(self, event: Event) -> None:
        if isinstance(event, Closed):
            self._disarm()
        try:
            await super().handle(event)
        except BaseException:
            self._disarm()  # e.g. HTTP/2 was assumed or upgraded to: another protocol now
            raise
        if isinstance(event, RawData) and event.data:
            self._after_data()

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            # Handing over the event's own Headers object skips h11's re-validation.
            event = type(event)(status_code=event.status_code, headers=event.headers,
                                reason=REASON_PHRASES.get(event.status_code, b""))
        await super()._send_h11_event(event)

    def _after_data(self) -> None:
        """Arm, keep or drop the deadline for the state the bytes just read left."""
        if not isinstance(self.connection, h11.Connection):
            return  # a WebSocket
        state = self.connection.their_state
        if state is h11.IDLE:
            if self._timing != "head" and self.connection.trailing_data[0]:
                self._arm("head", self._head_timeout)  # a head began: from its first byte
            elif self._timing == "body":
                self._disarm()
        elif state is h11.SEND_BODY:
            self._last_body_byte = asyncio.get_running_loop().time()
            if self._timing != "body":
                self._arm("body", self._body_timeout)
        elif self._timing:
            self._disarm()

    def _arm(self, timing: str, delay: float) -> None:
        self._disarm()
        self._timing = timing
        self._timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timing = ""

    def _expired(self) -> None:
        self._timer = None
        state = self.connection.their_state  # type: ignore[union-attr]
        if (self._timing, state) not in (("head", h11.IDLE), ("body", h11.SEND_BODY)):
            self._timing = ""  # what it bounded is over (reads may wait on a response)
            return
        if self._timing == "body":
            idle = asyncio.get_running_loop().time() - self._last_body_byte
            if idle < self._body_timeout:  # bytes came since: wait for the rest of the pause
                self._timer = asyncio.get_running_loop().call_later(
                    self._body_timeout - idle, self._expired)
                return
        timing, self._timing = self._timing, ""
        if timing:
            self.task_group.spawn(self._time_out, timing)

    async def _time_out(self, timing: str) -> None:
        if timing == "head":
            await self.send(RawData(data=_request_timeout(
                f"request head not received within {self._head_timeout:g} s")))
        await self.send(Closed())


def _request_timeout(message: str) -> bytes:
    """A whole 408 response with the JSON error body, written past h11 (which has no
    request to answer yet), and the connection closes after it."""
    body = orjson.dumps({"error": message, "statusCode": 408})
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))


def install() -> None:
    hypercorn_h2.StreamBuffer = FlowControlledStreamBuffer  # type: ignore[misc]
    hypercorn.protocol.H2Protocol = AshH2Protocol  # type: ignore[misc]
    hypercorn.protocol.H11Protocol = AshH11Protocol  # type: ignore[misc]
