"""Our fixes to hypercorn's HTTP/2 protocol, kept in this one module.

hypercorn 0.18 drops the whole connection when a DATA frame arrives for a
stream whose response is already complete: `H2Protocol._handle_events` looks
the stream up with `self.streams[event.stream_id]` and the KeyError escapes the
connection's task group, killing every other stream on that connection. That
happens whenever a handler answers before reading the whole request body (a
401 or 413, say) and the client is still sending it. The fix discards such
DATA, still returning its flow-control credit to the peer.

`install()` swaps the subclass into `hypercorn.protocol`, which is where
hypercorn's protocol wrapper looks the class up when a connection starts.
"""

from __future__ import annotations

import h2.events
import hypercorn.protocol
from hypercorn.protocol.h2 import H2Protocol


class AshH2Protocol(H2Protocol):
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


def install() -> None:
    hypercorn.protocol.H2Protocol = AshH2Protocol  # type: ignore[misc]
