"""SSE frames cannot be forged by any bytes an agent sends (issue 11, finding 5).

Every frame `wire.sse` encodes is read back with a strict WHATWG parser
(tests/whatwg_sse.py): it must dispatch exactly one event, with our id, our type and
the data as sent (line breaks normalised to LF, invalid UTF-8 replaced, as any client
sees it), and must not touch the reconnection time.
"""

from __future__ import annotations

import codecs
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.event_guard import history_document, replay_frames
from gateway.store import EventRow
from tests.whatwg_sse import parse_stream
from wire import sse
from wire.events import TURN_EVENT_TYPES

CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f"]
HOSTILE_PIECES: list[bytes] = [
    *(c.encode() for c in CONTROL_CHARS),
    b"\r", b"\n", b"\r\n", b"\n\n", b"\r\r", b"\n\r", b": ", b":", b" ",
    b"id: 424242", b"id:", b"event: done", b"event:", b"data:", b"retry: 1", b"retry:1",
    "\u2028".encode(), "\u2029".encode(), "\u0085".encode(), "\ufeff".encode(),
    b"\xff", b"\xfe", b"\xc0\xaf", b"\xe2\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
    b'{"text":"hi"}', b"text_delta", b"done", "caf\u00e9".encode(),
]
FORGED_TYPES = [
    "text_delta\nid:424242\nevent:done",
    "text_delta\rid: 424242",
    "text_delta\r\nevent: done",
    "done\n\ndata: {}",
    "x\nretry: 1",
    "text_delta\x00",
    "text_delta ",
    " text_delta",
    "text-delta",
    "Text_delta",
    "text_delta\u2028",
    "t\u00e9xt",
    "\u212aelvin",
    "",
    "a" * 65,
    "1abc",
    "_x",
]

hostile_bytes = st.lists(st.sampled_from(HOSTILE_PIECES) | st.binary(max_size=8),
                         max_size=24).map(b"".join)
hostile_text = st.lists(
    st.sampled_from([p.decode("utf-8", "replace") for p in HOSTILE_PIECES]) | st.text(max_size=6),
    max_size=12).map("".join)
event_ids = st.integers(min_value=0, max_value=sse.MAX_EVENT_ID)


def as_client_sees(data: bytes) -> str:
    text = codecs.decode(data, "utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def assert_one_event(frame: bytes, event_id: int, event_type: str, data: bytes) -> None:
    parsed = parse_stream(frame)
    assert len(parsed.events) == 1, (frame, parsed)
    event = parsed.events[0]
    assert event.last_event_id == str(event_id)
    assert event.type == event_type
    assert event.data == as_client_sees(data)
    assert parsed.last_event_id == str(event_id)
    assert parsed.retry_ms is None


@settings(max_examples=200, deadline=None)
@given(event_id=event_ids, event_type=st.sampled_from(sorted(TURN_EVENT_TYPES)),
       data=hostile_bytes)
def test_any_data_bytes_give_exactly_one_event_with_that_data(
        event_id: int, event_type: str, data: bytes) -> None:
    assert_one_event(sse.encode_event(event_id, event_type, data), event_id, event_type, data)


@pytest.mark.parametrize("piece", HOSTILE_PIECES, ids=repr)
def test_each_hostile_piece_as_data_gives_one_event(piece: bytes) -> None:
    for data in (piece, b"a" + piece, piece + b"z", piece * 3, b'{"t":"' + piece + b'"}'):
        assert_one_event(sse.encode_event(7, "text_delta", data), 7, "text_delta", data)


def test_two_frames_in_a_row_stay_two_events_whatever_the_first_data() -> None:
    for piece in HOSTILE_PIECES:
        stream = sse.encode_event(1, "text_delta", piece) + sse.encode_event(2, "done", b"{}")
        parsed = parse_stream(stream)
        assert [(e.last_event_id, e.type) for e in parsed.events] == [
            ("1", "text_delta"), ("2", "done")], piece


@pytest.mark.parametrize("event_type", FORGED_TYPES, ids=repr)
def test_event_type_that_is_not_a_plain_token_is_refused(event_type: str) -> None:
    with pytest.raises(ValueError):
        sse.encode_event(1, event_type, b"{}")


def test_newline_type_cannot_forge_a_done_with_another_id() -> None:
    """The attack of finding 5, as the issue tried it."""
    with pytest.raises(ValueError):
        sse.encode_event(12, "text_delta\nid:424242\nevent:done", b'{"text":"x"}')


@settings(max_examples=200, deadline=None)
@given(event_id=event_ids, event_type=hostile_text, data=hostile_bytes)
def test_any_type_is_refused_or_read_back_exactly(
        event_id: int, event_type: str, data: bytes) -> None:
    try:
        frame = sse.encode_event(event_id, event_type, data)
    except ValueError:
        assert not sse.is_event_type(event_type)
        return
    assert sse.is_event_type(event_type)
    assert_one_event(frame, event_id, event_type, data)


@pytest.mark.parametrize("event_type", [
    *sorted(TURN_EVENT_TYPES), "a", "input_json_delta", "x" * 64, "a1_b2"])
def test_plain_token_types_are_accepted(event_type: str) -> None:
    assert sse.is_event_type(event_type)
    assert_one_event(sse.encode_event(3, event_type, b"{}"), 3, event_type, b"{}")


@pytest.mark.parametrize("event_id", [-1, sse.MAX_EVENT_ID + 1, True, 1.0, "5"], ids=repr)
def test_event_id_must_be_a_non_negative_int64(event_id: object) -> None:
    with pytest.raises(ValueError):
        sse.encode_event(event_id, "done", b"{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["a\nretry: 1", "a\rdata: x", "a\r\n\r\nevent: done", "\n"],
                         ids=repr)
def test_comment_with_a_line_break_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        sse.encode_comment(text)


def test_comment_dispatches_nothing() -> None:
    parsed = parse_stream(sse.encode_comment("keep-alive"))
    assert parsed.events == [] and parsed.last_event_id == "" and parsed.retry_ms is None


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(hostile_text, hostile_bytes), max_size=5))
def test_history_document_is_valid_json_whatever_the_logged_rows(
        rows: list[tuple[str, bytes]]) -> None:
    logged = [EventRow(seq, event_type, data) for seq, (event_type, data) in enumerate(rows, 1)]
    document = json.loads(history_document(logged))  # the strict stdlib parser
    assert [e["id"] for e in document["events"]] == list(range(1, len(rows) + 1))
    for event, (event_type, data) in zip(document["events"], rows, strict=True):
        assert sse.is_event_type(event["type"])
        assert event["type"] == (event_type if sse.is_event_type(event_type) else "error")
        if event["type"] == "error" and not sse.is_event_type(event_type):
            assert event["data"]["code"] == "invalid_event_type"
        elif event.get("invalidJson"):
            assert event["data"] == data.decode("utf-8", "replace")
        else:
            assert event["data"] == json.loads(data)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(hostile_text, hostile_bytes), min_size=1, max_size=5))
def test_replayed_rows_give_one_event_each_with_their_own_id(
        rows: list[tuple[str, bytes]]) -> None:
    logged = [EventRow(seq, event_type, data) for seq, (event_type, data) in enumerate(rows, 1)]
    parsed = parse_stream(replay_frames(logged))
    assert [e.last_event_id for e in parsed.events] == [str(r.seq) for r in logged]
    assert [e.type for e in parsed.events] == [
        t if sse.is_event_type(t) else "error" for t, _ in rows]
    assert parsed.retry_ms is None
