"""The runner's end of a bridge socket: command frames out, event frames in.

A small asyncio protocol decodes frames as bytes arrive and queues the events.
Reading stops while too many events wait unread, so a slow consumer fills the
socket and stalls the agent instead of growing memory. Waiting for an event is
safe to cancel: a frame is only taken off the queue when it is returned.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import orjson

from runner import timing
from runner.timing import TIMING
from wire import timing as wt
from wire.bridge import FrameDecoder, FrameError, encode_frame
from wire.events import EXEC, EXEC_RESULT, MODEL_CANCEL, MODEL_REQUEST, Event

PAUSE_AT = 256
"""Queued events at which the socket stops being read."""
RESUME_AT = 64


class _BridgeProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.events: deque[Event] = deque()
        self.closed = False
        self.error: FrameError | None = None
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.exec_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        """`exec` commands awaiting their `exec_result`, by id (they bypass the event queue)."""
        self.model_handler: Callable[[Event], None] | None = None
        """Takes `model_request`/`model_cancel` frames (the model proxy); they bypass the queue."""
        self._decoder = FrameDecoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            self.error = exc
            self.transport.abort()
            return
        for frame in frames:
            if frame.type == EXEC_RESULT:
                self._answer_exec(frame.data)
            elif frame.type in (MODEL_REQUEST, MODEL_CANCEL):
                if self.model_handler is not None:
                    self.model_handler(frame)
            elif TIMING and frame.type == wt.FRAME:
                timing.relay_bridge_points(frame.data)
            else:
                self.events.append(frame)
        if len(self.events) >= PAUSE_AT and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        for waiter in self.exec_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("bridge exited during exec"))
        self.exec_waiters.clear()

    def _answer_exec(self, payload: bytes) -> None:
        answer = orjson.loads(payload)
        waiter = self.exec_waiters.pop(answer.get("id", ""), None)
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
                      model_handler: Callable[[Event], None] | None = None) -> BridgeClient:
        """Wrap the runner's end of a connected socketpair; `model_handler` gets the bridge's
        model proxy frames."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_unix_connection(_BridgeProtocol, sock=sock)
        protocol.model_handler = model_handler
        return cls(transport, protocol)

    def set_model_handler(self, handler: Callable[[Event], None] | None) -> None:
        """Route model proxy frames to `handler` from now on (a warm bridge gets its
        session's proxy when it is bound)."""
        self._protocol.model_handler = handler

    @property
    def closed(self) -> bool:
        """The bridge's end is closed: it exited, or is exiting."""
        return self._protocol.closed

    @property
    def error(self) -> FrameError | None:
        """Why the stream was cut, if the bridge sent something that is not a frame."""
        return self._protocol.error

    def send(self, command: str, payload: bytes = b"{}") -> None:
        """Write one command frame (commands are small: no flow control needed)."""
        if not self._transport.is_closing():
            self._transport.write(encode_frame(command, payload))

    async def exec(self, command: str, time_limit: float) -> dict[str, Any]:
        """Run a shell command in the bridge; the `exec_result` payload, parsed.

        Raises ConnectionError if the bridge goes away first.
        """
        if self._protocol.closed:
            raise ConnectionError("bridge is closed")
        exec_id = secrets.token_hex(8)
        waiter = asyncio.get_running_loop().create_future()
        self._protocol.exec_waiters[exec_id] = waiter
        try:
            self.send(EXEC, orjson.dumps(
                {"id": exec_id, "command": command, "timeout_ms": int(time_limit * 1000)}
            ))
            return await waiter
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
        if protocol.paused and len(protocol.events) <= RESUME_AT:
            protocol.paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
        return event

    def close(self) -> None:
        self._transport.close()
