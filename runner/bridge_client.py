"""The runner's end of a bridge socket: command frames out, event frames in.

Everything that comes off the socket is untrusted: the bridge runs as the agent's uid.
A small asyncio protocol feeds the bytes to a `BridgeGuard` (wire/bridge_limits.py),
which decodes them and checks every frame before anything is queued; the first frame
that breaks a rule stops the bridge (`on_violation` kills it) and nothing of it, or
after it, gets through. Reading stops while the queued events exceed a byte budget, so
a slow consumer fills the socket and stalls the agent instead of growing memory. A frame
that starts and does not complete within the limits' deadline (while the runner reads)
is a violation too. Waiting for an event is safe to cancel: a frame is only taken off
the queue when it is returned.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import orjson

from runner import timing
from runner.timing import TIMING
from wire import timing as wt
from wire.bridge import encode_frame
from wire.bridge_limits import QUEUED_FRAME_OVERHEAD, BridgeGuard, BridgeLimits, Violation
from wire.events import EXEC, EXEC_RESULT, MODEL_CANCEL, MODEL_REQUEST, QUERY, Event

ViolationHandler = Callable[[Violation], None]


class ExecTimeout(TimeoutError):
    """The bridge did not answer an `exec` within the command's time limit plus grace."""


class _BridgeProtocol(asyncio.Protocol):
    def __init__(self, guard: BridgeGuard) -> None:
        self.transport: asyncio.Transport | None = None
        self.guard = guard
        self.events: deque[Event] = deque()
        self.queued_bytes = 0
        """What the queued events count for against `max_queued_bytes`."""
        self.closed = False
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.exec_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        """`exec` commands awaiting their `exec_result`, by id (they bypass the event queue)."""
        self.model_handler: Callable[[Event], None] | None = None
        """Takes `model_request`/`model_cancel` frames (the model proxy); they bypass the queue."""
        self.on_violation: ViolationHandler | None = None
        """Called once, at the first violation: stops the bridge (kills its process)."""
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stall_frames = 0
        self._violated = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        guard = self.guard
        frames = guard.feed(data, time.monotonic())
        events = self.events
        for frame in frames:
            kind = frame.type
            if kind == EXEC_RESULT:
                self._answer_exec(frame.data)
            elif kind == MODEL_REQUEST or kind == MODEL_CANCEL:
                if self.model_handler is not None:
                    self.model_handler(frame)
            elif kind == wt.FRAME:
                timing.relay_bridge_points(frame.data)
            else:
                events.append(frame)
                self.queued_bytes += len(frame.data) + QUEUED_FRAME_OVERHEAD
        if guard.violation is not None:
            self.violate(guard.violation)
            return
        if self.queued_bytes > guard.limits.max_queued_bytes and not self.paused:
            self.pause()
        if guard.partial and self._stall_timer is None and not self.paused:
            self._watch_stall()
        self._wake()

    def pause(self) -> None:
        """Stop reading (the byte budget is spent); a frame's deadline waits meanwhile."""
        assert self.transport is not None
        self.paused = True
        self.transport.pause_reading()
        self._stop_stall_watch()

    def resume(self) -> None:
        assert self.transport is not None
        self.paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()
            if self.guard.partial:
                self._watch_stall()

    def _watch_stall(self) -> None:
        self._stall_frames = self.guard.frames
        self._stall_timer = asyncio.get_running_loop().call_later(
            self.guard.limits.frame_deadline, self._check_stall)

    def _stop_stall_watch(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _check_stall(self) -> None:
        """A frame was partial `frame_deadline` ago: if no frame completed since and one
        is still partial, the bridge stalled mid-frame; else watch the frame now partial."""
        self._stall_timer = None
        if self.closed or self.paused or not self.guard.partial:
            return
        if self.guard.frames == self._stall_frames:
            self.violate(self.guard.stalled())
        else:
            self._watch_stall()

    def violate(self, violation: Violation) -> None:
        """Stop the bridge: close the socket, fail pending execs, tell the owner."""
        if self._violated:
            return
        self._violated = True
        self.guard.violation = violation
        self.closed = True
        self._stop_stall_watch()
        if self.transport is not None:
            self.transport.abort()
        self._fail_execs(ConnectionError(f"bridge protocol violation: {violation.message}"))
        if self.on_violation is not None:
            self.on_violation(violation)
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_stall_watch()
        self._wake()
        self._fail_execs(ConnectionError("bridge exited during exec"))

    def _fail_execs(self, error: ConnectionError) -> None:
        for waiter in self.exec_waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self.exec_waiters.clear()

    def _answer_exec(self, payload: bytes) -> None:
        answer = orjson.loads(payload)  # valid JSON: the guard checked
        if not isinstance(answer, dict):
            return
        waiter = self.exec_waiters.pop(str(answer.get("id", "")), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class BridgeClient:
    def __init__(self, transport: asyncio.Transport, protocol: _BridgeProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def connect(cls, sock: socket.socket,
                      model_handler: Callable[[Event], None] | None = None, *,
                      limits: BridgeLimits | None = None,
                      on_violation: ViolationHandler | None = None,
                      warm: bool = False) -> BridgeClient:
        """Wrap the runner's end of a connected socketpair; `model_handler` gets the bridge's
        model proxy frames, `on_violation` is called at the first frame that breaks the
        protocol or `limits` (it should kill the bridge). `warm`: a warm-pool bridge."""
        loop = asyncio.get_running_loop()
        guard = BridgeGuard(limits, now=time.monotonic(), warm=warm, timing=TIMING)
        guard.model_frames = model_handler is not None
        transport, protocol = await loop.create_unix_connection(
            lambda: _BridgeProtocol(guard), sock=sock)
        protocol.model_handler = model_handler
        protocol.on_violation = on_violation
        return cls(transport, protocol)

    def set_model_handler(self, handler: Callable[[Event], None] | None) -> None:
        """Route model proxy frames to `handler` from now on (a warm bridge gets its
        session's proxy when it is bound); with none, a model frame is a violation."""
        self._protocol.model_handler = handler
        self._protocol.guard.model_frames = handler is not None

    def set_violation_handler(self, handler: ViolationHandler | None) -> None:
        """Who stops the bridge at a violation from now on (a warm bridge's new owner)."""
        self._protocol.on_violation = handler

    @property
    def limits(self) -> BridgeLimits:
        return self._protocol.guard.limits

    @property
    def closed(self) -> bool:
        """The bridge's end is closed: it exited, is exiting, or broke the protocol."""
        return self._protocol.closed

    @property
    def violation(self) -> Violation | None:
        """The rule the bridge broke, if it did (the socket was cut there)."""
        return self._protocol.guard.violation

    def send(self, command: str, payload: bytes = b"{}") -> None:
        """Write one command frame (commands are small: no flow control needed). A query
        opens a turn: its events may come from now until its `done`."""
        if not self._transport.is_closing():
            if command == QUERY:
                self._protocol.guard.open_turn()
            self._transport.write(encode_frame(command, payload))

    async def exec(self, command: str, time_limit: float) -> dict[str, Any]:
        """Run a shell command in the bridge; the `exec_result` payload, parsed.

        Raises ConnectionError if the bridge goes away first, ExecTimeout if it has not
        answered `exec_grace` seconds after the command's time limit.
        """
        if self._protocol.closed:
            raise ConnectionError("bridge is closed")
        exec_id = secrets.token_hex(8)
        waiter = asyncio.get_running_loop().create_future()
        self._protocol.exec_waiters[exec_id] = waiter
        deadline = time_limit + self.limits.exec_grace
        try:
            self.send(EXEC, orjson.dumps(
                {"id": exec_id, "command": command, "timeout_ms": int(time_limit * 1000)}
            ))
            async with asyncio.timeout(deadline):
                return await waiter
        except TimeoutError:
            raise ExecTimeout(f"the sandbox did not answer exec within {deadline:g} s") from None
        finally:
            self._protocol.exec_waiters.pop(exec_id, None)

    async def next_event(self) -> Event | None:
        """The next event, or None once the bridge's end is closed and every event is read."""
        protocol = self._protocol
        while not protocol.events:
            if protocol.closed:
                return None
            protocol.waiter = asyncio.get_running_loop().create_future()
            try:
                await protocol.waiter
            finally:
                protocol.waiter = None
        event = protocol.events.popleft()
        protocol.queued_bytes -= len(event.data) + QUEUED_FRAME_OVERHEAD
        if protocol.paused and protocol.queued_bytes <= protocol.guard.limits.resume_queued_bytes:
            protocol.resume()
        return event

    def close(self) -> None:
        self._transport.close()
