"""A minimal blocking HTTP/2 client on h2 with frame-level control, for tests and bench."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events


@dataclass
class StreamResult:
    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: bool = False
    auto_ack: bool = True
    """Give the server back its stream window as data arrives; False holds it at zero."""
    unacked: int = 0


class RawH2Client:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.authority = parts.netloc.encode()
        self.timeout = timeout
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.streams: dict[int, StreamResult] = {}
        self.terminated = False
        self._flush()

    def pump_out(self) -> None:
        """Send whatever the h2 state machine has queued (after direct `conn` calls)."""
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    _flush = pump_out

    def request(self, method: str, path: str, headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None, end_stream: bool = True,
                auto_ack: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        all_headers = [(":method", method), (":path", path), (":scheme", "http"),
                       (":authority", self.authority.decode()), *(headers or [])]
        self.conn.send_headers(stream_id, all_headers, end_stream=body is None and end_stream)
        self.streams[stream_id] = StreamResult(auto_ack=auto_ack)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end_stream)
        self._flush()
        return stream_id

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.conn.send_data(stream_id, data, end_stream=end_stream)
        self._flush()

    def pump(self) -> None:
        """Read once from the socket and apply the events."""
        data = self.sock.recv(65536)
        if not data:
            self.terminated = True
            return
        for event in self.conn.receive_data(data):
            self._apply(event)
        self._flush()

    def _apply(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            result = self.streams[event.stream_id]
            result.headers = dict(event.headers)
            result.status = int(result.headers[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            result = self.streams[event.stream_id]
            result.body += event.data
            if result.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                # Keep the connection window open so other streams are unaffected.
                self.conn.increment_flow_control_window(event.flow_controlled_length)
                result.unacked += event.flow_controlled_length
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = True

    def open_window(self, stream_id: int) -> None:
        """Start reading a held stream normally: return its window and ack from now on."""
        result = self.streams[stream_id]
        result.auto_ack = True
        self.conn.increment_flow_control_window(result.unacked + 65535, stream_id)
        result.unacked = 0
        self.pump_out()

    def pump_for(self, seconds: float) -> None:
        """Keep reading (and answering) for a while, e.g. while another stream is held."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.05)
        try:
            while time.monotonic() < deadline and not self.terminated:
                try:
                    self.pump()
                except TimeoutError:
                    continue
        finally:
            self.sock.settimeout(self.timeout)

    def wait_response(self, stream_id: int) -> StreamResult:
        result = self.streams[stream_id]
        while not (result.ended or result.reset) and not self.terminated:
            self.pump()
        return result

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        self.sock.close()
