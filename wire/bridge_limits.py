"""What a bridge may send the runner, and the sans-IO checker that holds it to that.

The bridge runs as the agent's uid, inside the sandbox: everything that comes off its
socket is untrusted input, exactly like a request from the internet. `BridgeGuard`
decodes the runner's side of the socket and checks every frame at the boundary, before
anything is queued, relayed, logged or written to disk:

* known frame types only (an allowlist), each where the protocol allows it: `warm`
  first (a warm-pool bridge), `ready` once, turn events only while a turn is open,
  `timing` only when the runner asked for timing points, model proxy frames only when
  the session has a model proxy;
* a payload of valid JSON (orjson validates; nothing is re-encoded) no bigger than the
  frame cap (model requests have a cap of their own: they carry a whole model request);
* bounded events and bytes per turn and per second (token buckets);
* a started frame completes within a deadline (the I/O side keeps the clock: see
  `stalled`); a socket idle between frames is fine.

A frame that breaks a rule is a `Violation`: `feed` stops there, returns the frames
before it and keeps the violation; nothing of the offending frame, or after it, is
returned. The runner then kills the bridge (runner/bridge_client.py, runner/local.py).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, fields

import orjson

from wire import events
from wire import timing as wt
from wire.events import Event

KIB = 1024
MIB = 1024 * KIB
ENV_PREFIX = "ASH_BRIDGE_"
"""Each limit is configurable as ASH_BRIDGE_<FIELD NAME IN UPPER CASE>."""
ERROR_CODE = "bridge_protocol_violation"
QUEUED_FRAME_OVERHEAD = 128
"""Bytes a queued frame counts for beyond its payload (its objects in memory), so a flood
of tiny frames fills the queue budget as surely as a few big ones."""
MAX_TYPE_LENGTH = max(len(name) for name in (*events.BRIDGE_EVENT_TYPES, events.WARM, wt.FRAME))
_HEADER = struct.Struct(">I")
_HEADER_SIZE = _HEADER.size
_unpack_header = _HEADER.unpack_from
_loads = orjson.loads


@dataclass(frozen=True, slots=True)
class BridgeLimits:
    """Every bound on a bridge's output. Defaults fit real agents with room to spare."""

    max_frame_bytes: int = 4 * MIB
    """Largest frame body but a model request's. An `exec_result` carries two 256 KiB
    outputs, JSON-escaped (up to 6 bytes a byte): ~3 MiB at worst."""
    max_model_frame_bytes: int = 48 * MIB
    """Largest `model_request` body: a request body of up to 32 MiB
    (runner/bridge/model_relay.py MAX_BODY), base64-encoded, plus its head."""
    max_turn_events: int = 250_000
    """Frames in one turn (the mock agent's largest turn is 100,000 tokens)."""
    max_turn_bytes: int = 64 * MIB
    """Payload bytes of one turn's events: what one turn may add to the event log."""
    events_per_second: float = 10_000.0
    """Sustained frame rate (every kind), refilling a bucket of `event_burst`."""
    event_burst: int = 120_000
    bytes_per_second: float = 16.0 * MIB
    """Sustained rate of turn-event payload bytes, refilling a bucket of `byte_burst`."""
    byte_burst: int = 64 * MIB
    max_queued_bytes: int = 1 * MIB
    """Bytes of events queued unread (each counted with QUEUED_FRAME_OVERHEAD) at which the
    runner stops reading the socket; the bridge then blocks on its writes."""
    resume_queued_bytes: int = 256 * KIB
    """Queued bytes at or below which reading resumes."""
    frame_deadline: float = 30.0
    """Seconds a started frame has to complete while the runner reads."""
    exec_grace: float = 10.0
    """Seconds an `exec` answer may take beyond the command's own time limit."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            if not getattr(self, spec.name) > 0:
                raise ValueError(f"{ENV_PREFIX}{spec.name.upper()} must be positive")
        if self.resume_queued_bytes > self.max_queued_bytes:
            raise ValueError(f"{ENV_PREFIX}RESUME_QUEUED_BYTES must not exceed "
                             f"{ENV_PREFIX}MAX_QUEUED_BYTES")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BridgeLimits:
        """The defaults, with any ASH_BRIDGE_<NAME> in `environ`; ValueError if one is not a
        positive number."""
        values: dict[str, int | float] = {}
        for spec in fields(cls):
            raw = environ.get(ENV_PREFIX + spec.name.upper())
            if not raw:
                continue
            kind = float if spec.type in ("float", float) else int
            try:
                values[spec.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{spec.name.upper()} must be a number, "
                                 f"not {raw[:40]!r}") from None
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule a bridge broke: `rule` names it, `message` says how, in bounded text."""

    rule: str
    message: str

    def payload(self) -> bytes:
        """The turn's `error` event payload."""
        return orjson.dumps({"error": f"bridge protocol violation: {self.message}",
                             "code": ERROR_CODE, "rule": self.rule})


def shown(raw: bytes) -> str:
    """Attacker bytes in a message: at most 32 of them, escaped (no newline survives)."""
    return repr(bytes(raw[:32])) + ("..." if len(raw) > 32 else "")


# What the protocol lets each frame type do (a small int: one compare per frame).
_TURN, _DONE, _READY, _WARM, _EXEC, _MODEL, _TIMING = range(7)
_KINDS: dict[bytes, tuple[str, int]] = {
    **{name.encode(): (name, _TURN) for name in events.TURN_EVENT_TYPES},
    events.DONE.encode(): (events.DONE, _DONE),
    events.READY.encode(): (events.READY, _READY),
    events.WARM.encode(): (events.WARM, _WARM),
    events.EXEC_RESULT.encode(): (events.EXEC_RESULT, _EXEC),
    events.MODEL_REQUEST.encode(): (events.MODEL_REQUEST, _MODEL),
    events.MODEL_CANCEL.encode(): (events.MODEL_CANCEL, _MODEL),
    wt.FRAME.encode(): (wt.FRAME, _TIMING),
}
ALLOWED_TYPES: frozenset[str] = frozenset(name for name, _ in _KINDS.values())
"""Every frame type a bridge may send: wire/events.py BRIDGE_EVENT_TYPES, `warm`, `timing`."""
_MODEL_REQUEST = events.MODEL_REQUEST.encode()


class BridgeGuard:
    """Decodes and checks one bridge's frames (sans-IO: the caller passes the time)."""

    def __init__(self, limits: BridgeLimits | None = None, *, now: float = 0.0,
                 warm: bool = False, timing: bool = False) -> None:
        """`warm`: a warm-pool bridge, whose first frame is `warm`. `timing`: the runner
        asked for timing points (ASH_DEBUG_TIMING), so `timing` frames may come."""
        self.limits = limits = limits or BridgeLimits()
        self.violation: Violation | None = None
        self.turns_open = 0
        """Queries sent whose `done` has not arrived."""
        self.frames = 0
        """Frames decoded so far (the I/O side's deadline checks for progress with it)."""
        self.model_frames = False
        """The session has a model proxy: `model_request`/`model_cancel` may come."""
        self._buffer = bytearray()
        self._need = 0
        """Bytes the held partial frame needs before it is worth looking at again."""
        self._warm = warm
        self._ready = False
        self._timing = timing
        self._largest = max(limits.max_frame_bytes, limits.max_model_frame_bytes)
        self._max_turn_events = limits.max_turn_events
        self._max_turn_bytes = limits.max_turn_bytes
        self._turn_events = 0
        self._turn_bytes = 0
        self._event_tokens = float(limits.event_burst)
        self._byte_tokens = float(limits.byte_burst)
        self._refilled = now

    @property
    def partial(self) -> bool:
        """Bytes of a frame that has started and not completed are held."""
        return bool(self._buffer)

    def open_turn(self) -> None:
        """A query went out: its events, up to its `done`, may come now."""
        if self.turns_open == 0:
            self._turn_events = 0
            self._turn_bytes = 0
        self.turns_open += 1

    def stalled(self) -> Violation:
        """The violation for a frame that did not complete in time (the I/O side decides)."""
        return self._break("frame_deadline", f"a frame started and did not complete within "
                           f"{self.limits.frame_deadline:g} s")

    def feed(self, data: bytes, now: float) -> list[Event]:
        """The whole frames `data` completes, each checked; stops at the first violation
        (then `violation` is set and every later call returns nothing)."""
        if self.violation is not None:
            return []
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []  # a frame still arriving: nothing to check until it has
            data = bytes(buffer)
            buffer.clear()
        limits = self.limits
        elapsed = now - self._refilled
        if elapsed > 0:
            self._refilled = now
            self._event_tokens = min(self._event_tokens + elapsed * limits.events_per_second,
                                     limits.event_burst)
            self._byte_tokens = min(self._byte_tokens + elapsed * limits.bytes_per_second,
                                    limits.byte_burst)
        frames: list[Event] = []
        offset = 0
        size = len(data)
        need = 0
        max_frame = limits.max_frame_bytes
        kinds = _KINDS
        append = frames.append
        try:
            while size - offset >= _HEADER_SIZE:
                (length,) = _unpack_header(data, offset)
                start = offset + _HEADER_SIZE
                end = start + length
                if size < end:
                    need = end - offset
                    if length > max_frame and not self._big_frame_allowed(
                            data, start, end, length):
                        need = 0  # look again as soon as more arrives: its type decides
                    break
                if length > max_frame:
                    self._big_frame_allowed(data, start, end, length)
                offset = end
                # The hot path, inline: a turn event inside an open turn.
                space = data.find(b" ", start, min(end, start + MAX_TYPE_LENGTH + 1))
                kind = kinds.get(data[start:space]) if space > start else None
                if kind is None or kind[1] != _TURN or not self.turns_open:
                    append(self._frame(data, start, end, length))
                    continue
                self._turn_events += 1
                self._turn_bytes += length
                self._byte_tokens -= length
                self._event_tokens -= 1
                if (self._turn_events > self._max_turn_events or self._event_tokens < 0
                        or self._turn_bytes > self._max_turn_bytes or self._byte_tokens < 0):
                    self._turn_bound_broken(kind[0])
                payload = data[space + 1:end]
                try:
                    _loads(payload)
                except orjson.JSONDecodeError:
                    self._fail("invalid_json", f"a {kind[0]} payload that is not JSON")
                self.frames += 1
                append(Event(kind[0], payload))
        except _Broken:
            return frames
        if offset < size:
            buffer += data[offset:]
        self._need = need
        return frames

    def _big_frame_allowed(self, data: bytes, start: int, end: int, length: int) -> bool:
        """Whether a frame over the general cap is a model request under its own cap (False
        while its type has not arrived); a violation as soon as it is not, before its body
        is held."""
        if length > self._largest:
            self._fail("frame_too_large", f"a frame of {length} bytes is over the "
                       f"{self._largest}-byte limit")
        head = data[start:min(end, start + MAX_TYPE_LENGTH + 1)]
        if len(head) <= MAX_TYPE_LENGTH and b" " not in head:
            return False
        if not head.startswith(_MODEL_REQUEST + b" "):
            self._fail("frame_too_large", f"a frame of {length} bytes is over the "
                       f"{self.limits.max_frame_bytes}-byte limit")
        return True

    def _frame(self, data: bytes, start: int, end: int, length: int) -> Event:
        space = data.find(b" ", start, min(end, start + MAX_TYPE_LENGTH + 1))
        if space < 0:
            self._fail("unknown_frame_type", f"a frame with no known type "
                       f"({shown(data[start:min(end, start + 32)])})")
        kind = _KINDS.get(data[start:space])
        if kind is None:
            self._fail("unknown_frame_type", f"unknown frame type {shown(data[start:space])}")
        name, role = kind
        payload = data[space + 1:end]
        if role <= _DONE:  # a turn event: one branch for every turn bound
            self._turn_events += 1
            self._turn_bytes += length
            self._byte_tokens -= length
            if (not self.turns_open or self._turn_events > self._max_turn_events
                    or self._turn_bytes > self._max_turn_bytes or self._byte_tokens < 0):
                self._turn_bound_broken(name)
        elif role == _READY:
            if self._ready:
                self._fail("unexpected_frame", "a second ready")
            self._ready = True
        elif role == _WARM:
            if not self._warm or self.frames:
                self._fail("unexpected_frame", "warm from a bridge that is not waiting to bind")
        elif role == _MODEL:
            if not self.model_frames:
                self._fail("unexpected_frame", f"{name} from a session with no model proxy")
        elif role == _TIMING:
            if not self._timing or not self.turns_open:
                self._fail("unexpected_frame", "timing points nobody asked for")
        elif not self._ready:  # exec_result
            self._fail("unexpected_frame", f"{name} before ready")
        self._event_tokens -= 1
        if self._event_tokens < 0:
            self._event_rate_broken()
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._fail("invalid_json", f"a {name} payload that is not JSON")
        if role == _DONE:
            self.turns_open -= 1
        self.frames += 1
        return Event(name, payload)

    def _turn_bound_broken(self, name: str) -> None:
        limits = self.limits
        if not self.turns_open:
            self._fail("event_outside_turn", f"a {name} event while no turn is open")
        if self._turn_events > limits.max_turn_events:
            self._fail("turn_event_limit", f"over {limits.max_turn_events} events in one turn")
        if self._turn_bytes > limits.max_turn_bytes:
            self._fail("turn_byte_limit", f"over {limits.max_turn_bytes} bytes of events in "
                       "one turn")
        if self._byte_tokens < 0:
            self._fail("byte_rate", f"events over {limits.bytes_per_second:g} bytes/s "
                       f"(burst {limits.byte_burst})")
        self._event_rate_broken()

    def _event_rate_broken(self) -> None:
        self._fail("event_rate", f"frames over {self.limits.events_per_second:g}/s "
                   f"(burst {self.limits.event_burst})")

    def _break(self, rule: str, message: str) -> Violation:
        if self.violation is None:
            self.violation = Violation(rule, message)
        self._buffer.clear()
        self._need = 0
        return self.violation

    def _fail(self, rule: str, message: str) -> None:
        self._break(rule, message)
        raise _Broken


class _Broken(Exception):
    """Unwinds `feed` at a violation (never leaves this module)."""
