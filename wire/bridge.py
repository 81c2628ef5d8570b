"""The bridge socket protocol: length-prefixed frames on a Unix stream socket.

A frame is a 4-byte big-endian body length, then the body: the frame's type
name in ASCII, one space, and the JSON payload bytes. Keeping the type outside
the JSON lets the runner and gateway route a frame without parsing its payload.

Commands flow runner -> bridge (`query`, `interrupt`, `shutdown`); events flow
bridge -> runner (`ready`, then per turn `message`, `text_delta`, ..., `done`). The
model proxy's frames (`model_request` out, `model_response_*` back) share the socket.
This module is sans-IO: `encode_frame` makes bytes, `FrameDecoder` consumes them.
"""

from __future__ import annotations

import struct

from wire.events import Event

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
MAX_FRAME_SIZE = 64 * 1024 * 1024
"""Largest frame body accepted; a bigger length prefix means a corrupt stream."""


class FrameError(ValueError):
    """The byte stream is not valid bridge protocol."""


def encode_frame(frame_type: str, payload: bytes = b"{}") -> bytes:
    body_len = len(frame_type) + 1 + len(payload)
    return b"".join((_HEADER.pack(body_len), frame_type.encode("ascii"), b" ", payload))


def decode_body(body: bytes) -> Event:
    """Split one frame body (without its length prefix) into type and payload."""
    space = body.find(b" ")
    if space <= 0:
        raise FrameError("frame body has no type name")
    try:
        frame_type = body[:space].decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError("frame type is not ASCII") from exc
    return Event(frame_type, body[space + 1 :])


def body_length(header: bytes) -> int:
    """Read a frame's body length from its 4-byte header, rejecting absurd sizes."""
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_SIZE:
        raise FrameError(f"frame of {length} bytes exceeds the {MAX_FRAME_SIZE}-byte limit")
    return length


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, collect whole frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        frames: list[Event] = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= HEADER_SIZE:
            length = body_length(buffer[offset : offset + HEADER_SIZE])
            end = offset + HEADER_SIZE + length
            if len(buffer) < end:
                break
            frames.append(decode_body(bytes(buffer[offset + HEADER_SIZE : end])))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buffer)
