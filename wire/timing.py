"""Hot-path timing points (`ASH_DEBUG_TIMING=1`): their names and their record format.

A point is one JSON line, `{"ash_timing": NAME, "t_ns": T, "turn": ID, "session": S}`,
where T is CLOCK_MONOTONIC in nanoseconds (`time.monotonic_ns()`): one clock for every
process on the machine, sandboxed bridges included, so points from the gateway, a
runner and a bridge compare directly. ID is the turn id the gateway chose (or the
client sent in `x-ash-turn`), carried down to the bridge: it joins a turn's points
across processes.

The bridge sends its points up its socket as one `timing` frame (a JSON list of
records) just before the turn's `done`; the runner writes them out as lines.

Sans-IO: this module makes and reads bytes; `runner.timing` does the clock and the writing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

ENV = "ASH_DEBUG_TIMING"
FILE_ENV = "ASH_DEBUG_TIMING_FILE"
KEY = "ash_timing"
FRAME = "timing"
"""Bridge -> runner frame type carrying the bridge's points of one turn."""
TURN_HEADER = b"x-ash-turn"
"""Request header a client may set on `POST .../messages` to choose the turn id."""

CLIENT_SEND = "client.send"
GATEWAY_REQUEST_IN = "gateway.request_in"
GATEWAY_SESSION_FOUND = "gateway.session_found"
GATEWAY_BACKEND_SEND = "gateway.backend_send"
RUNNER_RECEIVED = "runner.received"
BRIDGE_RECEIVED = "bridge.received"
AGENT_FIRST_TOKEN = "agent.first_token"
BRIDGE_FIRST_EVENT_WRITTEN = "bridge.first_event_written"
RUNNER_FIRST_EVENT = "runner.first_event"
RUNNER_FIRST_EVENT_SENT = "runner.first_event_sent"
GATEWAY_FIRST_EVENT = "gateway.first_event"
GATEWAY_FIRST_FRAME_WRITTEN = "gateway.first_frame_written"
CLIENT_FIRST_EVENT = "client.first_event"

ORDER: tuple[str, ...] = (
    CLIENT_SEND,
    GATEWAY_REQUEST_IN,
    GATEWAY_SESSION_FOUND,
    GATEWAY_BACKEND_SEND,
    RUNNER_RECEIVED,
    BRIDGE_RECEIVED,
    AGENT_FIRST_TOKEN,
    BRIDGE_FIRST_EVENT_WRITTEN,
    RUNNER_FIRST_EVENT,
    RUNNER_FIRST_EVENT_SENT,
    GATEWAY_FIRST_EVENT,
    GATEWAY_FIRST_FRAME_WRITTEN,
    CLIENT_FIRST_EVENT,
)
"""Every point in causal order: the order a turn passes them."""
SPLIT_ONLY: frozenset[str] = frozenset({RUNNER_RECEIVED, RUNNER_FIRST_EVENT_SENT})
"""Points only a gateway/runner split takes (standalone has no gRPC hop)."""
AFTER_HANDOFF: frozenset[str] = frozenset(
    {BRIDGE_FIRST_EVENT_WRITTEN, RUNNER_FIRST_EVENT_SENT, GATEWAY_FIRST_FRAME_WRITTEN})
"""Points taken once a write call has returned: the next process may already have read
the data, so the point after one of these can carry an earlier timestamp."""
TOKEN_EVENTS: frozenset[str] = frozenset({"text_delta", "thinking_delta"})
"""The event the first-event points follow is the turn's first of these: the one that
carries the agent's first token. The hops must follow one event, and an agent may send
others first (the Claude backend forwards the CLI's `system` message before the model
has said anything); for the mock agent it is the turn's first agent-derived event."""

_TURN_ID = re.compile(rb"[A-Za-z0-9_.-]{1,64}")
_MAX_BATCH = 64


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    t_ns: int
    turn: str
    session: str = ""


def encode(point: Point) -> bytes:
    """One point as a JSON line (with its newline)."""
    return orjson.dumps({KEY: point.name, "t_ns": point.t_ns, "turn": point.turn,
                         "session": point.session}) + b"\n"


def decode(line: bytes | str) -> Point | None:
    """The point a line holds, or None for any other line (log output, a torn write)."""
    if isinstance(line, str):
        line = line.encode()
    start = line.find(b'{"%s"' % KEY.encode())
    if start < 0:
        return None
    try:
        record = orjson.loads(line[start:])
    except orjson.JSONDecodeError:
        return None
    return _point(record)


def _point(record: object) -> Point | None:
    if not isinstance(record, dict):
        return None
    name, t_ns, turn = record.get(KEY), record.get("t_ns"), record.get("turn")
    session = record.get("session", "")
    if (not isinstance(name, str) or isinstance(t_ns, bool) or not isinstance(t_ns, int)
            or not isinstance(turn, str) or not turn or not isinstance(session, str)):
        return None
    return Point(name, t_ns, turn, session)


def valid_turn_id(raw: bytes | None) -> str | None:
    """A client-chosen turn id if it is short and plain (it goes into logs), else None."""
    if raw is None or not _TURN_ID.fullmatch(raw):
        return None
    return raw.decode("ascii")


def encode_batch(points: Iterable[Point]) -> bytes:
    """The payload of a `timing` frame."""
    return orjson.dumps([{KEY: p.name, "t_ns": p.t_ns, "turn": p.turn, "session": p.session}
                         for p in points])


def decode_batch(payload: bytes, allowed_prefixes: tuple[str, ...]) -> list[Point]:
    """The points of a `timing` frame, keeping only names under `allowed_prefixes`: the
    bridge runs agent code, so what it sends is checked before it reaches a log."""
    try:
        records = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(records, list):
        return []
    points = (_point(record) for record in records[:_MAX_BATCH])
    return [p for p in points if p is not None and p.name.startswith(allowed_prefixes)
            and valid_turn_id(p.turn.encode()) is not None and len(p.session) <= 128]
