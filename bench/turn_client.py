"""Benchmark clients that time a turn: one connection, read synchronously, SSE parsed as it
arrives, so TTFT ends at the first *agent-derived* event — never at a bookkeeping event.

`H2Client` speaks HTTP/2 (h2c prior knowledge) on one connection; `Http1Client` HTTP/1.1
keep-alive on one socket. Both do the least client work possible, the same for every
deployment measured.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from bench import timing as bt
from bench.deploy import API_KEY
from bench.h2_client import RawH2Client
from wire import events
from wire import timing as wt

TURN_TIMEOUT = 120.0

AGENT_EVENT_TYPES: frozenset[str] = events.TURN_EVENT_TYPES - {events.ERROR, events.DONE}
"""SSE event types the agent produces; the first of them ends TTFT."""
MODEL_OUTPUT_TYPES: frozenset[str] = frozenset(
    {events.TEXT_DELTA, events.THINKING_DELTA, events.TOOL_USE})
"""The agent passing on its model's output: what the "Ash overhead" figure is timed to. (The
real SDK's first event is its `system` message, sent before it calls the model.)"""


@dataclass(frozen=True, slots=True)
class SseFrame:
    event: str
    """The `event:` field; "" when the frame has none (never counted as the agent's)."""
    data: bytes
    id: str | None = None


class SseScanner:
    """Incremental SSE parser: feed it bytes as they arrive, get back complete frames.

    Comment lines (`: keep-alive`) and frames with no data are skipped, as a browser would.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[SseFrame]:
        self._pending = (self._pending + data).replace(b"\r\n", b"\n")
        *blocks, self._pending = self._pending.split(b"\n\n")
        frames = []
        for block in blocks:
            event, lines, ident = "", [], None
            for line in block.split(b"\n"):
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"event":
                    event = value.decode()
                elif name == b"data":
                    lines.append(value)
                elif name == b"id":
                    ident = value.decode()
            if lines:
                frames.append(SseFrame(event, b"\n".join(lines), ident))
        return frames


def is_agent_event(frame: SseFrame) -> bool:
    return frame.event in AGENT_EVENT_TYPES


@dataclass(slots=True)
class TurnTiming:
    """One turn, in seconds after the request was sent (`perf_counter` clock)."""

    first_event: float
    first_agent_event: float
    first_output: float | None
    """The first text, thinking or tool use; None if the turn had none."""
    done: float
    first_agent_type: str
    sent_wall: float
    """The request's send time on `time.time()`, to line up with the model stub's clock."""
    points: tuple[wt.Point, ...] = ()
    """`client.send` and `client.first_event` under the turn id sent as `x-ash-turn`."""


class TurnWatch:
    """Follows one turn's SSE bytes and records when its milestones arrived."""

    def __init__(self) -> None:
        self.turn_id = bt.new_turn_id()
        self.first_token: float | None = None
        self.scanner = SseScanner()
        self.sent_wall = time.time()
        self.started = time.perf_counter()
        self.first_event: float | None = None
        self.first_agent: tuple[float, str] | None = None
        self.first_output: float | None = None
        self.done: float | None = None
        self.frames = 0

    def feed(self, data: bytes, at: float) -> None:
        for frame in self.scanner.feed(data):
            self.frames += 1
            if self.first_event is None:
                self.first_event = at - self.started
            if self.first_agent is None and is_agent_event(frame):
                self.first_agent = (at - self.started, frame.event)
            if self.first_output is None and frame.event in MODEL_OUTPUT_TYPES:
                self.first_output = at - self.started
            if self.first_token is None and frame.event in wt.TOKEN_EVENTS:
                self.first_token = at
            if frame.event == events.DONE and self.done is None:
                self.done = at - self.started

    def result(self) -> TurnTiming:
        """The turn's timing; a turn with no agent event or no `done` measured nothing."""
        if self.first_agent is None or self.done is None or self.first_event is None:
            missing = "no agent-derived event" if self.first_agent is None else "no done"
            raise RuntimeError(f"turn streamed {self.frames} frames but {missing}")
        return TurnTiming(self.first_event, self.first_agent[0], self.first_output, self.done,
                          self.first_agent[1], self.sent_wall, self.points())

    def points(self) -> tuple[wt.Point, ...]:
        """The client's timing points; perf_counter is CLOCK_MONOTONIC on Linux, the
        servers' clock, so its seconds convert to their nanoseconds."""
        if self.first_token is None:
            return ()
        return (bt.client_point(wt.CLIENT_SEND, self.turn_id, round(self.started * 1e9)),
                bt.client_point(wt.CLIENT_FIRST_EVENT, self.turn_id,
                                round(self.first_token * 1e9)))


# --- clients ---------------------------------------------------------------------------


class BenchClient(Protocol):
    def call(self, method: str, path: str, payload: object = None) -> tuple[int, Any]: ...

    def turn(self, session_id: str, body: dict[str, Any]) -> TurnTiming: ...

    def close(self) -> None: ...


H2_HEADERS = [("authorization", f"Bearer {API_KEY}"), ("content-type", "application/json")]


class H2Client:
    """Requests on one HTTP/2 connection (h2c prior knowledge), read synchronously."""

    def __init__(self, url: str) -> None:
        self.raw = RawH2Client(url, timeout=TURN_TIMEOUT)
        self.raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        stream_id = self.raw.request(method, path, headers=H2_HEADERS, body=body)
        result = self.raw.wait_response(stream_id)
        del self.raw.streams[stream_id]
        if result.status is None:
            raise ConnectionError(f"{method} {path}: no response (connection lost)")
        return result.status, json.loads(bytes(result.body)) if result.body else None

    def turn(self, session_id: str, body: dict[str, Any]) -> TurnTiming:
        watch = TurnWatch()
        stream_id = self.raw.request("POST", f"/api/sessions/{session_id}/messages",
                                     headers=[*H2_HEADERS, (bt.TURN_HEADER, watch.turn_id)],
                                     body=json.dumps(body).encode())
        result = self.raw.streams[stream_id]
        seen = 0
        while not (result.ended or result.reset or self.raw.terminated):
            self.raw.pump()
            if len(result.body) > seen:
                at = time.perf_counter()
                watch.feed(bytes(result.body[seen:]), at)
                seen = len(result.body)
        del self.raw.streams[stream_id]
        if result.status != 200:
            raise RuntimeError(f"turn failed: {result.status} {bytes(result.body)[:300]!r}")
        return watch.result()

    def close(self) -> None:
        self.raw.close()


class ChunkedDecoder:
    """Incremental HTTP/1.1 chunked transfer decoding; `finished` after the last chunk."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0
        """Bytes of the current chunk's data still to come."""
        self._crlf = False
        """The CRLF that ends a chunk's data is still to come."""
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = []
        while not self.finished:
            if self._left:
                piece = self._buffer[:self._left]
                out.append(piece)
                self._left -= len(piece)
                self._buffer = self._buffer[len(piece):]
                if self._left:
                    break
                self._crlf = True
            elif self._crlf:
                if len(self._buffer) < 2:
                    break
                self._buffer, self._crlf = self._buffer[2:], False
            else:
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self._buffer[:line_end].split(b";")[0], 16)
                if size == 0:  # the last chunk: then (trailers and) an empty line
                    end = self._buffer.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    self._buffer, self.finished = self._buffer[end + 4:], True
                else:
                    self._buffer, self._left = self._buffer[line_end + 2:], size
        return b"".join(out)

    def rest(self) -> bytes:
        """Bytes after the terminating chunk (the next response on the connection)."""
        return self._buffer


class Http1Client:
    """A keep-alive HTTP/1.1 client on one raw socket."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = f"{parts.hostname}:{parts.port}"
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=TURN_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def _send(self, method: str, path: str, body: bytes, extra: str = "") -> None:
        self.sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def _recv(self) -> bytes:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("gateway closed the connection")
        return data

    def _head(self) -> tuple[int, str]:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        text = head.decode("latin-1")
        return int(text.split(" ", 2)[1]), text

    def call(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        """A request with a JSON body and a JSON (content-length) response."""
        self._send(method, path, b"" if payload is None else json.dumps(payload).encode())
        status, head = self._head()
        length = re.search(r"(?i)content-length: *(\d+)", head)
        if length is None:
            raise RuntimeError(f"{method} {path}: no content-length in {head!r}")
        size = int(length.group(1))
        while len(self.buffer) < size:
            self.buffer += self._recv()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return status, json.loads(body) if body else None

    def turn(self, session_id: str, body: dict[str, Any]) -> TurnTiming:
        watch = TurnWatch()
        self._send("POST", f"/api/sessions/{session_id}/messages", json.dumps(body).encode(),
                   f"{bt.TURN_HEADER}: {watch.turn_id}\r\n")
        status, head = self._head()
        if status != 200 or "chunked" not in head.lower():
            raise RuntimeError(f"turn failed: {head!r} {self.buffer[:300]!r}")
        decoder = ChunkedDecoder()
        data, self.buffer = self.buffer, b""
        while True:
            watch.feed(decoder.feed(data), time.perf_counter())
            if decoder.finished:
                break
            data = self._recv()
        self.buffer = decoder.rest()
        return watch.result()

    def close(self) -> None:
        self.sock.close()


def connect(url: str, http: str) -> BenchClient:
    return Http1Client(url) if http == "HTTP/1.1" else H2Client(url)
