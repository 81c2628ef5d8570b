"""Taking hot-path timing points (`ASH_DEBUG_TIMING=1`); the format is `wire.timing`.

Off unless the variable is set when the process starts: `TIMING` is decided once, at
import, and every call site is `if TIMING: ...`, so the unset path costs one global
lookup and a branch: no clock read, no allocation.

When on, a point costs a clock read and a list append on the hot path. Lines are
written later, off it: a flush is scheduled `FLUSH_DELAY` seconds after the first
unwritten point (and runs at exit), to stderr, or appended to the file
ASH_DEBUG_TIMING_FILE names.

The bridge (inside the sandbox, only its socket to the outside) keeps its points of a
turn in memory (`TurnPoints`) and sends them up as one `timing` frame just before the
turn's `done`, after every event the client waits for: no write on its first-event
path, and the points land in the runner's own timing output beside its points, where
the bench reads them (a bridge's stderr would be one more file per session, copied
through the runner's event loop by the log pump, mid-turn).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
from collections.abc import Awaitable, Callable
from time import monotonic_ns

import orjson

from wire import timing as wt

TIMING: bool = os.environ.get(wt.ENV, "") not in ("", "0")
FLUSH_DELAY = 0.05
FLUSH_AT = 512
"""Points held before a flush happens at once, whatever the delay."""
BRIDGE_PREFIXES = ("bridge.", "agent.")
"""Point names a bridge may send (it runs agent code: the rest is dropped)."""

Emit = Callable[[str, bytes], Awaitable[None]]


class Recorder:
    """Buffers points and writes them as JSON lines to `fd` (or `path`, opened on need)."""

    def __init__(self, path: str | None = None, fd: int = 2) -> None:
        self._path = path
        self._fd = fd if path is None else -1
        self._points: list[wt.Point] = []
        self._scheduled = False

    def add(self, point: wt.Point) -> None:
        self._points.append(point)
        if len(self._points) >= FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._points:
            return
        data = b"".join(wt.encode(point) for point in self._points)
        self._points = []
        if self._fd < 0 and self._path is not None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                               0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]


_recorder = Recorder(os.environ.get(wt.FILE_ENV) or None)
if TIMING:
    atexit.register(_recorder.flush)


def point(name: str, turn: str, session: str = "", t_ns: int = 0) -> None:
    """Record `name` for `turn` now (or at `t_ns`); nothing for a turn without an id."""
    if turn:
        _recorder.add(wt.Point(name, t_ns or monotonic_ns(), turn, session))


def request_in(header: bytes | None, session: str) -> str:
    """Take `gateway.request_in`; returns the turn id: the client's (`x-ash-turn`) if it
    sent a valid one, else a new one."""
    now = monotonic_ns()
    turn = wt.valid_turn_id(header) or secrets.token_hex(8)
    _recorder.add(wt.Point(wt.GATEWAY_REQUEST_IN, now, turn, session))
    return turn


def relay_bridge_points(payload: bytes) -> None:
    """Write the points of a bridge's `timing` frame (checked) with this process's points."""
    for bridge_point in wt.decode_batch(payload, BRIDGE_PREFIXES):
        _recorder.add(bridge_point)


def flush() -> None:
    _recorder.flush()


class TurnPoints:
    """The bridge's points of one turn: `bridge.received`, `agent.first_token` (the agent
    hands its first `text_delta` or `thinking_delta` to `emit`, whatever the agent
    backend) and `bridge.first_event_written` (that event's frame write returned)."""

    def __init__(self, query: bytes, received_ns: int) -> None:
        try:
            turn = orjson.loads(query).get("turn")
        except (orjson.JSONDecodeError, AttributeError):
            turn = None
        self.turn = turn if isinstance(turn, str) else ""
        self.session = os.environ.get("ASH_SESSION_ID", "")
        self.points: list[wt.Point] = []
        if self.turn:
            self.points.append(wt.Point(wt.BRIDGE_RECEIVED, received_ns, self.turn, self.session))

    def emitter(self, emit: Emit) -> Emit:
        """`emit`, taking this turn's first-token and first-event points as events pass."""
        if not self.turn:
            return emit
        token_pending = True

        async def timed_emit(event_type: str, payload: bytes) -> None:
            nonlocal token_pending
            if token_pending and event_type in wt.TOKEN_EVENTS:
                token_pending = False
                self._add(wt.AGENT_FIRST_TOKEN)
                await emit(event_type, payload)
                self._add(wt.BRIDGE_FIRST_EVENT_WRITTEN)
            else:
                await emit(event_type, payload)

        return timed_emit

    def _add(self, name: str) -> None:
        self.points.append(wt.Point(name, monotonic_ns(), self.turn, self.session))

    def frame_payload(self) -> bytes | None:
        """The `timing` frame's payload, or None when there is nothing to send."""
        return wt.encode_batch(self.points) if self.points else None
