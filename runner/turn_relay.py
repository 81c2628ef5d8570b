"""A session's turns on the runner, held apart from the gateway's stream so they outlive it.

The relay pulls a turn's messages and writes them to the attached Session
stream. Every event gets the sandbox's next `seq_hint` and stays in the *tail*
until the gateway acknowledges that its event log holds it. If the stream
breaks (the gateway crashed or restarted) the turn goes on: its events collect
in the tail, up to `DETACHED_MAX_EVENTS`, then the relay stops pulling and the
agent pauses, until a gateway opens a stream again. That stream first gets the
tail after the last event the gateway's log holds (`Open.resume_after`), then
the turn goes on live on it. A turn no gateway takes over within
`DETACHED_TIMEOUT` seconds is interrupted; what it produced stays in the tail.

While attached, the tail holds only what the gateway has not yet written to
its log: its batches go out every 50 ms, so a few thousand events at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc

from wire import events
from wire import runner_pb2 as pb

log = logging.getLogger("ash.runner")

DETACHED_MAX_EVENTS = 10_000
"""Events a turn may produce with no gateway attached before the relay stops pulling."""
DETACHED_TIMEOUT = 300.0
"""Seconds a turn runs with no gateway attached before it is interrupted."""

MAX_COALESCED = 64
"""Most events waiting for a stream's in-flight write (they go out as one message)."""
MAX_COALESCED_BYTES = 1024 * 1024
"""Most payload bytes one coalesced message carries beyond its first event: with a single
event bounded by the bridge's frame cap, every message stays inside the gateway's gRPC
receive limit (`runner.grpc_transport`) however large the events a burst holds."""

Write = Callable[[pb.SessionEvent], Awaitable[None]]


@dataclass(slots=True)
class _Kept:
    hint: int
    """The event's seq_hint; for a state chunk, the hint of the event after it (its
    `done`), so the chunk is forgotten only once that `done` is in the log."""
    type: str = ""
    data: bytes = b""
    state: pb.SessionEvent | None = None

    def message(self) -> pb.SessionEvent:
        if self.state is not None:
            return self.state
        return pb.SessionEvent(type=self.type, data=self.data, seq_hint=self.hint)


class CoalescingWriter:
    """Writes a turn's messages to a stream with one write in flight at a time.

    A message put while no write is in flight goes out at once; events put while
    one is in flight wait and leave together, as one message, when it completes.
    """

    def __init__(self, write: Callable[[pb.SessionEvent], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[pb.SessionEvent] = []
        self._pending_bytes = 0
        self._in_flight: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    async def put(self, message: pb.SessionEvent) -> None:
        """Queue an event message; waits while `MAX_COALESCED` events or
        `MAX_COALESCED_BYTES` are already waiting."""
        self._raise_failure()
        self._pending.append(message)
        self._pending_bytes += len(message.data)
        if self._in_flight is None:
            self._start()
        while self._in_flight is not None and (
                len(self._pending) >= MAX_COALESCED
                or self._pending_bytes >= MAX_COALESCED_BYTES):
            await asyncio.wait({self._in_flight})
            self._raise_failure()

    async def put_alone(self, message: pb.SessionEvent) -> None:
        """Write a message that travels on its own (a state chunk), after all before it."""
        await self.flush()
        await self._write(message)

    async def flush(self) -> None:
        """Return once everything put so far is written."""
        while self._in_flight is not None:
            await asyncio.wait({self._in_flight})
        self._raise_failure()

    def _start(self) -> None:
        """Write the first waiting event with as many of the next as fit in one message."""
        pending = self._pending
        first = pending[0]
        taken, size = 1, 0
        while taken < len(pending) and size + len(pending[taken].data) <= MAX_COALESCED_BYTES:
            size += len(pending[taken].data)
            taken += 1
        if taken > 1:
            first.more.extend(pb.Event(type=m.type, data=m.data) for m in pending[1:taken])
        self._pending = pending[taken:]
        self._pending_bytes -= len(first.data) + size
        self._in_flight = asyncio.ensure_future(self._write(first))
        self._in_flight.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[None]) -> None:
        self._in_flight = None
        if write.cancelled():
            self._failure = asyncio.CancelledError()
        elif write.exception() is not None:
            self._failure = write.exception()
        elif self._pending:
            self._start()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure



class Sink:
    """One attached stream: the first message of a turn is written directly (it carries
    the time to first token), later ones through the coalescing writer."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.writer = CoalescingWriter(write)
        self.first = True

    async def send(self, message: pb.SessionEvent) -> None:
        if self.first:
            self.first = False
            await self.write(message)
        elif message.HasField("state"):
            await self.writer.put_alone(message)
        else:
            await self.writer.put(message)


class TurnRelay:
    """The turns of one sandbox: the tail of unacknowledged events and the running pump."""

    def __init__(self, session_id: str, interrupt: Callable[[], Awaitable[None]]) -> None:
        self.session_id = session_id
        self._interrupt = interrupt
        self._next_hint = 1
        self._tail: deque[_Kept] = deque()
        self._sink: Sink | None = None
        self._lock = asyncio.Lock()
        self._attached = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._abandon: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._pump is not None and not self._pump.done()

    @property
    def last_hint(self) -> int:
        """The seq_hint of the sandbox's last event so far (0: none yet)."""
        return self._next_hint - 1

    @property
    def unfinished(self) -> bool:
        """A turn runs, or events are kept that no gateway has acknowledged."""
        return self.running or bool(self._tail)

    def pending_turns(self, after: int) -> int:
        """Turns a gateway whose log ends at `after` would see end if it attached now."""
        kept_dones = sum(1 for kept in self._tail
                         if kept.hint > after and kept.type == events.DONE)
        return kept_dones + (1 if self.running else 0)

    # the gateway's side

    async def attach(self, write: Write, after: int) -> None:
        """Send what the tail holds after `after`, then go on live on this stream."""
        async with self._lock:
            self.ack(after)
            sink = Sink(write)
            for kept in list(self._tail):
                await sink.send(kept.message())
            await sink.writer.flush()
            self._sink = sink
            self._attached.set()
            if self._abandon is not None:
                self._abandon.cancel()
                self._abandon = None

    def detach(self, write: Write) -> None:
        """The stream `write` belongs to is over; a running turn goes on without it."""
        sink = self._sink
        if sink is not None and sink.write == write:
            self._lost(sink)

    def ack(self, hint: int) -> None:
        tail = self._tail
        while tail and tail[0].hint <= hint:
            tail.popleft()

    # the turn's side

    @property
    def turn(self) -> asyncio.Task[None] | None:
        """The running turn's pump, if a turn runs."""
        return self._pump if self.running else None

    def start(self, messages: AsyncIterator[pb.SessionEvent]) -> asyncio.Task[None]:
        """Run a turn; one that arrives while another runs starts after it."""
        previous = self.turn
        self._pump = asyncio.get_running_loop().create_task(self._run(messages, previous))
        return self._pump

    async def _run(self, messages: AsyncIterator[pb.SessionEvent],
                   previous: asyncio.Task[None] | None = None) -> None:
        try:
            if previous is not None:
                await asyncio.wait({previous})
            if self._sink is not None:
                self._sink.first = True  # a turn's first event is written directly, every turn
            async for message in messages:
                await self._deliver(message)
                if self._sink is None and len(self._tail) >= DETACHED_MAX_EVENTS:
                    await self._attached.wait()
            async with self._lock:
                sink = self._sink
                if sink is not None:
                    try:
                        await sink.writer.flush()
                    except (grpc.RpcError, asyncio.CancelledError, asyncio.InvalidStateError):
                        self._lost(sink)
        finally:
            closing = getattr(messages, "aclose", None)
            if closing is not None:
                await closing()

    async def _deliver(self, message: pb.SessionEvent) -> None:
        async with self._lock:
            if message.HasField("state"):
                self._tail.append(_Kept(self._next_hint, state=message))
            else:
                hint = self._next_hint
                self._next_hint = hint + 1
                message.seq_hint = hint
                self._tail.append(_Kept(hint, message.type, message.data))
            sink = self._sink
            if sink is None:
                return
            try:
                await sink.send(message)
            except (grpc.RpcError, asyncio.CancelledError, asyncio.InvalidStateError,
                    ConnectionError) as exc:
                if isinstance(exc, asyncio.CancelledError):
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                self._lost(sink)

    def _lost(self, sink: Sink) -> None:
        if self._sink is not sink:
            return
        self._sink = None
        self._attached.clear()
        if self.running and self._abandon is None:
            log.info("session %s: the gateway's stream is gone; its turn goes on, kept "
                     "for the next gateway", self.session_id)
            self._abandon = asyncio.get_running_loop().call_later(
                DETACHED_TIMEOUT, self._give_up)

    def _give_up(self) -> None:
        self._abandon = None
        if self.running and self._sink is None:
            log.warning("session %s: no gateway took its turn over in %g s; interrupting it",
                        self.session_id, DETACHED_TIMEOUT)
            task = asyncio.get_running_loop().create_task(self._interrupt())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._attached.set()

    async def close(self) -> None:
        """The sandbox is going away: stop the pump and forget the tail."""
        if self._abandon is not None:
            self._abandon.cancel()
            self._abandon = None
        pump = self._pump
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        self._tail.clear()
