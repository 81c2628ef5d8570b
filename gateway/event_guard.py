"""Agent events are untrusted bytes: the gateway's encoders cannot be broken by them.

Every event's type and payload come from the sandbox. The runner checks them at the
bridge boundary (an allowlist of types, payloads that are JSON); this module is the
gateway's own defence behind that, for whatever still gets here — from a runner of
another version, or from rows an older gateway logged:

* an event whose type is not a plain token (`wire.sse.is_event_type`) is never
  written: it is replaced by an `error` event (code `invalid_event_type`, the
  offending type quoted as a JSON string), logged with `%r`, and the turn goes on.
  Live events are replaced before they are logged, so the log, the live stream and
  every replay agree; a row already logged with such a type reads back replaced too.
* the `/stream/events` history is built by orjson; a payload that is valid JSON is embedded
  as it is (`orjson.Fragment`, no re-encode), one that is not is embedded as a JSON
  string with `"invalidJson": true`, so the document always parses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson

from gateway.store import EventRow
from wire import events, sse

log = logging.getLogger("ash.events")

INVALID_EVENT_TYPE = "invalid_event_type"
QUOTED_TYPE_LIMIT = 64
"""How much of a refused type the error event quotes (the log line quotes as much)."""


def invalid_type_error(event_type: str) -> bytes:
    """The payload of the `error` event that stands in for an event with a forged type."""
    quoted = event_type[:QUOTED_TYPE_LIMIT]
    return orjson.dumps({
        "error": "the agent sent an event whose type is not a plain token; it was dropped",
        "code": INVALID_EVENT_TYPE,
        "type": quoted,
    })


def replace_forged(session_id: str, seq: int, event: events.Event) -> events.Event:
    """The `error` event that stands in for a live event the encoder refused.

    The turn's producer tries `wire.sse.encode_event` first and calls this only when
    it raises, so the hot path pays the encoder's own type check and nothing more."""
    log.warning("session %s: event %d has a type that is not a plain token; replaced "
                "by an error event: %r", session_id, seq, event.type[:QUOTED_TYPE_LIMIT])
    return events.Event(events.ERROR, invalid_type_error(event.type), event.hint)


def replay_frames(rows: Iterable[EventRow]) -> bytes:
    """Logged events as SSE frames, a row with a forged type replaced by an `error`
    (not logged again: a client may read the same rows many times)."""
    return b"".join(_replay_frame(row) for row in rows)


def _replay_frame(row: EventRow) -> bytes:
    try:
        return sse.encode_event(row.seq, row.type, row.data)
    except ValueError:
        return sse.encode_event(row.seq, events.ERROR, invalid_type_error(row.type))


def history_document(rows: Iterable[EventRow]) -> bytes:
    """`{"events": [{"id", "type", "data"}, …]}`, valid JSON whatever the rows hold.

    Validating each payload costs a parse; this is the cold read path, never the stream.
    """
    items: list[dict[str, object]] = []
    for row in rows:
        event_type, data = row.type, row.data
        if not sse.is_event_type(event_type):
            event_type, data = events.ERROR, invalid_type_error(event_type)
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            items.append({"id": row.seq, "type": event_type,
                          "data": data.decode("utf-8", "replace"), "invalidJson": True})
            continue
        items.append({"id": row.seq, "type": event_type, "data": orjson.Fragment(data)})
    return orjson.dumps({"events": items})
