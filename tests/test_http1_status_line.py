"""Every HTTP/1.1 response carries its standard reason phrase (`HTTP/1.1 200 OK`), under
hypercorn and granian: clients such as nghttp2's `h2load --h1` count a status line without
one as a failed request."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.gateway_process import GatewayProcess


@pytest.fixture(params=["hypercorn", "granian"])
def server_args(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    yield ["--server", request.param]


def status_line(gateway: GatewayProcess, path: str, authorized: bool = True) -> bytes:
    """The first line of the response to a GET of `path`, sent over a raw TCP socket."""
    parts = urlsplit(gateway.url)
    auth = b"authorization: Bearer %s\r\n" % gateway.api_key.encode() if authorized else b""
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nhost: %s\r\n%sconnection: close\r\n\r\n"
                     % (path.encode(), parts.netloc.encode(), auth))
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.partition(b"\r\n")[0] + b"\r\n"


def test_health_over_http1_answers_200_ok(gateway: GatewayProcess) -> None:
    assert status_line(gateway, "/health") == b"HTTP/1.1 200 OK\r\n"


def test_unknown_route_over_http1_answers_404_not_found(gateway: GatewayProcess) -> None:
    assert status_line(gateway, "/api/no-such-route") == b"HTTP/1.1 404 Not Found\r\n"


def test_missing_key_over_http1_answers_401_unauthorized(gateway: GatewayProcess) -> None:
    assert status_line(gateway, "/api/agents", authorized=False) == \
        b"HTTP/1.1 401 Unauthorized\r\n"


def test_h2load_h1_counts_every_health_request_as_succeeded(gateway: GatewayProcess) -> None:
    result = subprocess.run(
        ["h2load", "--h1", "-n", "50", "-c", "2", f"{gateway.url}/health"],
        capture_output=True, text=True, timeout=60, check=False)
    print(result.stdout)
    requests = re.search(r"requests: .*", result.stdout)
    assert requests is not None, result.stdout + result.stderr
    assert re.search(r"\b50 succeeded, 0 failed\b", requests.group(0)), requests.group(0)
