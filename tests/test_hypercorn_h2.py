"""Our hypercorn HTTP/2 fix: DATA for an already-answered stream must not kill the connection."""

from __future__ import annotations

import h2.exceptions

from bench.h2_client import RawH2Client
from tests.gateway_process import GatewayProcess


def auth_headers(gateway: GatewayProcess) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {gateway.api_key}"), ("content-type", "application/json")]


def test_body_sent_after_an_early_413_leaves_the_connection_usable(
    gateway: GatewayProcess,
) -> None:
    client = RawH2Client(gateway.url)
    try:
        declared = 4 * 1024 * 1024
        stream_id = client.request(
            "POST", "/api/sessions",
            headers=[*auth_headers(gateway), ("content-length", str(declared))],
            body=b"x" * 1024, end_stream=False,
        )
        answer = client.wait_response(stream_id)
        assert answer.status == 413
        try:
            client.send_data(stream_id, b"x" * 8192)
            client.send_data(stream_id, b"x" * 8192)
        except h2.exceptions.StreamClosedError:
            pass  # the server reset the stream: the client may not send more
        health = client.request("GET", "/health")
        result = client.wait_response(health)
        assert not client.terminated
        assert result.status == 200
    finally:
        client.close()


def test_unread_body_of_a_401_does_not_kill_other_streams(gateway: GatewayProcess) -> None:
    client = RawH2Client(gateway.url)
    try:
        for _ in range(20):
            stream_id = client.request("POST", "/api/sessions", headers=[
                ("content-type", "application/json")], body=b'{"agent": "x"}')
            assert client.wait_response(stream_id).status == 401
        health = client.request("GET", "/health")
        assert client.wait_response(health).status == 200
        assert not client.terminated
    finally:
        client.close()


def test_a_connection_outlives_a_thousand_requests(gateway: GatewayProcess) -> None:
    client = RawH2Client(gateway.url)
    try:
        for _ in range(1010):
            assert client.wait_response(client.request("GET", "/health")).status == 200
        assert not client.terminated
    finally:
        client.close()
