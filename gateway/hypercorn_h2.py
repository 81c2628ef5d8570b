"""Our fixes to hypercorn's HTTP/2 protocol, kept in this one module.

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

`install()` swaps these classes into hypercorn's modules, which is where
hypercorn looks them up when a connection or stream starts.
"""

from __future__ import annotations

import contextlib

import h2.errors
import h2.events
import h2.exceptions
import hypercorn.protocol
import hypercorn.protocol.h2 as hypercorn_h2
import priority
from hypercorn.protocol.events import Body, Data
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h2 import BUFFER_LOW_WATER, H2Protocol, StreamBuffer


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
        return True

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
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


def install() -> None:
    hypercorn_h2.StreamBuffer = FlowControlledStreamBuffer  # type: ignore[misc]
    hypercorn.protocol.H2Protocol = AshH2Protocol  # type: ignore[misc]
