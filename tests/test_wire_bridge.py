"""The bridge socket frame codec (wire/bridge.py)."""

from __future__ import annotations

import struct

import pytest

from wire.bridge import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    FrameDecoder,
    FrameError,
    decode_body,
    encode_frame,
)
from wire.events import Event


def test_frame_round_trips() -> None:
    frames = FrameDecoder().feed(encode_frame("text_delta", b'{"text":"hi"}'))
    assert frames == [Event("text_delta", b'{"text":"hi"}')]


def test_encoded_frame_is_length_prefixed_type_space_payload() -> None:
    assert encode_frame("done", b"{}") == b"\x00\x00\x00\x07done {}"


def test_default_payload_is_empty_json_object() -> None:
    assert FrameDecoder().feed(encode_frame("interrupt")) == [Event("interrupt", b"{}")]


def test_frame_fed_one_byte_at_a_time_decodes_once_complete() -> None:
    data = encode_frame("message", b'{"role":"assistant"}')
    decoder = FrameDecoder()
    for i in range(len(data) - 1):
        assert decoder.feed(data[i : i + 1]) == []
    assert decoder.feed(data[-1:]) == [Event("message", b'{"role":"assistant"}')]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 5, 7, 11, 64])
def test_frames_split_at_any_chunk_boundary_decode_in_order(chunk_size: int) -> None:
    expected = [
        Event("ready", b"{}"),
        Event("text_delta", b'{"text":"a"}'),
        Event("done", b'{"usage":{}}'),
    ]
    stream = b"".join(encode_frame(e.type, e.data) for e in expected)
    decoder = FrameDecoder()
    decoded: list[Event] = []
    for start in range(0, len(stream), chunk_size):
        decoded += decoder.feed(stream[start : start + chunk_size])
    assert decoded == expected
    assert decoder.pending == 0


def test_several_frames_in_one_chunk_all_decode() -> None:
    chunk = encode_frame("a", b"1") + encode_frame("b", b"2") + encode_frame("c", b"3")
    assert FrameDecoder().feed(chunk) == [Event("a", b"1"), Event("b", b"2"), Event("c", b"3")]


def test_partial_trailing_frame_is_kept_pending() -> None:
    second = encode_frame("done", b"{}")
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame("a", b"1") + second[:5]) == [Event("a", b"1")]
    assert decoder.pending == 5
    assert decoder.feed(second[5:]) == [Event("done", b"{}")]
    assert decoder.pending == 0


def test_payload_bytes_pass_through_unchanged() -> None:
    payload = b'{"text":"a b\\n\xc3\xa9"} \x00\xff\r\n trailing space '
    assert FrameDecoder().feed(encode_frame("text_delta", payload)) == [
        Event("text_delta", payload)
    ]


def test_empty_payload_round_trips() -> None:
    assert FrameDecoder().feed(encode_frame("ready", b"")) == [Event("ready", b"")]


def test_oversize_length_prefix_raises_frame_error() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">I", MAX_FRAME_SIZE + 1))


def test_length_prefix_at_limit_is_accepted_and_awaits_body() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", MAX_FRAME_SIZE)) == []
    assert decoder.pending == HEADER_SIZE


def test_body_without_type_raises_frame_error() -> None:
    with pytest.raises(FrameError):
        decode_body(b' {"text":"x"}')


def test_body_without_space_raises_frame_error() -> None:
    with pytest.raises(FrameError):
        decode_body(b"done")


def test_frame_missing_type_raises_frame_error_from_decoder() -> None:
    body = b" {}"
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)


def test_non_ascii_type_raises_frame_error() -> None:
    with pytest.raises(FrameError):
        decode_body("tëxt {}".encode())
