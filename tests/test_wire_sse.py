"""Server-Sent Events framing (wire/sse.py)."""

from __future__ import annotations

from wire.sse import HEADERS, encode_comment, encode_event


def test_event_frame_exact_bytes() -> None:
    assert encode_event(42, "text_delta", b'{"text":"hi"}') == (
        b'id: 42\nevent: text_delta\ndata: {"text":"hi"}\n\n'
    )


def test_event_data_bytes_pass_through_unchanged() -> None:
    data = b'{"text":"caf\xc3\xa9 \\n"}'
    assert encode_event(1, "message", data) == b"id: 1\nevent: message\ndata: " + data + b"\n\n"


def test_multi_line_data_becomes_several_data_lines() -> None:
    assert encode_event(3, "message", b"one\ntwo\nthree") == (
        b"id: 3\nevent: message\ndata: one\ndata: two\ndata: three\n\n"
    )


def test_crlf_and_cr_line_breaks_become_data_lines() -> None:
    assert encode_event(4, "message", b"a\r\nb\rc") == (
        b"id: 4\nevent: message\ndata: a\ndata: b\ndata: c\n\n"
    )


def test_trailing_newline_in_data_yields_empty_last_data_line() -> None:
    assert encode_event(5, "message", b"a\n") == b"id: 5\nevent: message\ndata: a\ndata: \n\n"


def test_empty_data_still_has_data_line() -> None:
    assert encode_event(0, "done", b"") == b"id: 0\nevent: done\ndata: \n\n"


def test_comment_frame_exact_bytes() -> None:
    assert encode_comment("keep-alive") == b": keep-alive\n\n"


def test_empty_comment_frame() -> None:
    assert encode_comment() == b": \n\n"


def test_headers_declare_event_stream_without_caching() -> None:
    headers = dict(HEADERS)
    assert headers[b"content-type"] == b"text/event-stream"
    assert headers[b"cache-control"] == b"no-cache"
