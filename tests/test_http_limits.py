"""Clients that cost the gateway much and ask nothing, over real sockets to a real gateway
(hypercorn): a request head that trickles in, a body that stalls, HTTP/2 control-frame
floods. The deadlines run at one second here (flags); the defaults are 10 s and 30 s.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import httpx
import orjson
import pytest
from hyperframe.frame import (
    DataFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from bench.h2_client import RawH2Client
from tests.conftest import create_session, deploy, make_agent_folder, make_client
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import module_gateway, running_gateway

DEADLINE = 1.0
CLOSE_BOUND = 10.0
"""Seconds within which a cut connection must be closed (the deadline plus a busy host)."""
ENHANCE_YOUR_CALM = 0xB
GOAWAY = 0x7

gateway, client = module_gateway(
    "http-limits",
    extra_args=["--request-head-timeout", str(DEADLINE),
                "--request-body-timeout", str(DEADLINE)])


def connect(gateway: GatewayProcess) -> socket.socket:
    parts = urlsplit(gateway.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=CLOSE_BOUND)
    return sock


def read_to_close(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; fails if it does not within `within`."""
    started = time.monotonic()
    received = bytearray()
    sock.settimeout(within)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open after {within} s; got {bytes(received)!r}") from None
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received), time.monotonic() - started


def request_head(gateway: GatewayProcess, method: str, path: str, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nhost: {urlsplit(gateway.url).netloc}\r\n"
            f"authorization: Bearer {gateway.api_key}\r\n{extra}\r\n").encode()


def test_a_trickled_request_head_gets_408_and_is_closed(gateway: GatewayProcess) -> None:
    head = request_head(gateway, "GET", "/health")
    with connect(gateway) as sock:
        for byte in head[:5]:  # a byte every 0.3 s: the whole head would take 20 s
            sock.sendall(bytes([byte]))
            time.sleep(0.3)
        answer, waited = read_to_close(sock, CLOSE_BOUND)
    print(f"\ntrickled head: closed {waited:.2f} s after its 5th byte: {answer[:40]!r}")
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    body = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["statusCode"] == 408 and "request head" in body["error"]


def test_a_stalled_request_body_closes_the_connection(gateway: GatewayProcess) -> None:
    head = request_head(gateway, "POST", "/api/sessions",
                        "content-type: application/json\r\ncontent-length: 100\r\n")
    with connect(gateway) as sock:
        sock.sendall(head + b'{"agent": ')
        answer, waited = read_to_close(sock, CLOSE_BOUND)
    print(f"\nstalled body: closed after {waited:.2f} s: {answer[:40]!r}")
    assert b"201" not in answer


def test_a_slow_but_steady_body_is_read_whole(gateway: GatewayProcess) -> None:
    """The body deadline bounds a pause, not the whole body: 3 s of bytes, none apart by
    more than a third of the deadline, make a request that is answered."""
    body = b'{"agent": "no-such-agent"}'
    head = request_head(gateway, "POST", "/api/sessions",
                        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n")
    with connect(gateway) as sock:
        sock.sendall(head)
        for offset in range(0, len(body), 3):
            sock.sendall(body[offset:offset + 3])
            time.sleep(DEADLINE / 3)
        sock.settimeout(CLOSE_BOUND)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert b'"statusCode":404' in answer


def test_an_idle_keep_alive_connection_outlives_the_head_deadline(
    gateway: GatewayProcess,
) -> None:
    with httpx.Client(base_url=gateway.url, headers=gateway.headers, timeout=30) as http1:
        assert http1.get("/health").status_code == 200
        time.sleep(DEADLINE * 2)
        assert http1.get("/health").status_code == 200
        assert http1.get("/health").extensions["http_version"] == b"HTTP/1.1"


def test_a_long_sse_response_over_http1_is_not_cut(gateway: GatewayProcess,
                                                    tmp_path_factory: pytest.TempPathFactory,
                                                    ) -> None:
    with make_client(gateway, "http1.1") as http1:
        deploy(http1, "slow", make_agent_folder(tmp_path_factory.mktemp("agent"), "slow"))
        session_id = create_session(http1, "slow")["id"]
        with http1.stream("POST", f"/api/sessions/{session_id}/messages",
                          json={"content": "take your time",
                                "options": {"tokenIntervalMs": 100, "tokens": 25}}) as response:
            assert response.status_code == 200
            text = b"".join(response.iter_raw())
    assert text.rstrip().endswith(b'"status":"ok"}')


@dataclass
class Flood:
    """A thread that sends batches of `frames` on an HTTP/2 connection, and one that keeps
    what the server sends back, until the server closes the connection."""

    gateway: GatewayProcess
    frames: Callable[[h2.connection.H2Connection], bytes]
    sent: int = 0
    """Frames sent."""
    received: bytearray = field(default_factory=bytearray)
    closed_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = connect(self.gateway)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        try:
            while not self._stop.is_set() and self.closed_at is None:
                self.sock.sendall(self.frames(self.conn))
                self.sent += BATCH
        except OSError:
            pass

    def _read(self) -> None:
        self.sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed_at = time.monotonic()
                return
            self.received += chunk

    def wait_closed(self, within: float) -> bool:
        self._threads[1].join(within)
        return self.closed_at is not None

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(5)

    def goaway_code(self) -> int | None:
        """The error code of the GOAWAY the server sent, if it did."""
        data, offset = bytes(self.received), 0
        while offset + 9 <= len(data):
            length = int.from_bytes(data[offset:offset + 3], "big")
            if data[offset + 3] == GOAWAY and offset + 9 + 8 <= len(data):
                (code,) = struct.unpack(">I", data[offset + 13:offset + 17])
                return int(code)
            offset += 9 + length
        return None


BATCH = 5_000
"""Frames per write of a flood."""


def repeated(frame: bytes) -> bytes:
    return frame * BATCH


def settings_frames(conn: h2.connection.H2Connection) -> bytes:
    return repeated(SettingsFrame(0).serialize())


def ping_frames(conn: h2.connection.H2Connection) -> bytes:
    return repeated(PingFrame(0, opaque_data=b"flooding").serialize())


def priority_frames(conn: h2.connection.H2Connection) -> bytes:
    return repeated(PriorityFrame(1, depends_on=0, stream_weight=16).serialize())


def window_update_frames(conn: h2.connection.H2Connection) -> bytes:
    return repeated(WindowUpdateFrame(0, window_increment=1).serialize())


REQUEST = [(":method", "GET"), (":path", "/health"), (":scheme", "http"),
           (":authority", "x")]


def rapid_reset_frames(conn: h2.connection.H2Connection) -> bytes:
    """Requests reset as soon as sent (CVE-2023-44487's pattern), fresh streams each batch."""
    for _ in range(BATCH // 2):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, REQUEST, end_stream=True)
        conn.reset_stream(stream_id)
    return conn.data_to_send()


def empty_data_frames(conn: h2.connection.H2Connection) -> bytes:
    """Empty DATA on a request whose body never comes."""
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [(":method", "POST"), *REQUEST[1:]])
    return conn.data_to_send() + repeated(DataFrame(stream_id, data=b"").serialize())


@pytest.mark.parametrize("frames", [settings_frames, ping_frames, priority_frames,
                                    window_update_frames, rapid_reset_frames,
                                    empty_data_frames])
def test_an_http2_control_frame_flood_gets_goaway_and_others_are_served(
    gateway: GatewayProcess, client: httpx.Client,
    frames: Callable[[h2.connection.H2Connection], bytes],
) -> None:
    flood = Flood(gateway, frames)
    try:
        started = time.monotonic()
        health = client.get("/health")
        answered = time.monotonic() - started
        closed = flood.wait_closed(CLOSE_BOUND)
        print(f"\n{frames.__name__}: {flood.sent:,} frames sent, closed={closed}, "
              f"GOAWAY code={flood.goaway_code()}; another client's GET /health "
              f"{health.status_code} in {answered * 1000:.0f} ms")
        assert health.status_code == 200
        assert answered < CLOSE_BOUND
        assert closed
        assert flood.goaway_code() == ENHANCE_YOUR_CALM
    finally:
        flood.stop()



def test_granian_closes_a_trickled_request_head(tmp_path: Path) -> None:
    """Under --server granian the head deadline is granian's own (HTTP1Settings): the
    connection closes (granian sends no 408); its body pauses and HTTP/2 control frames
    have no bound there (docs/servers.md)."""
    with running_gateway(tmp_path / "data", extra_args=[
            "--server", "granian", "--request-head-timeout", str(DEADLINE)]) as granian:
        with connect(granian) as sock:
            sock.sendall(request_head(granian, "GET", "/health")[:5])
            answer, waited = read_to_close(sock, CLOSE_BOUND)
    print(f"\ngranian, trickled head: closed after {waited:.2f} s: {answer[:40]!r}")
    assert b"200 OK" not in answer


def test_a_fast_reader_returning_credit_for_every_frame_keeps_its_connection(
    gateway: GatewayProcess, client: httpx.Client, tmp_path: Path,
) -> None:
    """A WINDOW_UPDATE per stream and per connection for each DATA frame (what h2 clients
    send as they read) is within the budget however fast the events come."""
    deploy(client, "fast", make_agent_folder(tmp_path, "fast"))
    session_id = create_session(client, "fast")["id"]
    raw = RawH2Client(gateway.url, timeout=60)
    try:
        stream = raw.request(
            "POST", f"/api/sessions/{session_id}/messages",
            headers=[("authorization", f"Bearer {gateway.api_key}"),
                     ("content-type", "application/json")],
            body=b'{"content": "fast", "options": {"tokens": 20000}}')
        body = bytes(raw.wait_response(stream).body)
        assert body.count(b"event: text_delta") == 20_000
        assert not raw.terminated
    finally:
        raw.close()
