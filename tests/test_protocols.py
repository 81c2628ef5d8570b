"""The gateway speaks HTTP/1.1, HTTP/2 cleartext (prior knowledge and Upgrade: h2c) and TLS+ALPN."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.conftest import TlsGateway, create_session, deploy, send_message
from tests.gateway_process import GatewayProcess
from tests.sse_client import parse_sse, reply_text


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args],
                          capture_output=True, text=True, check=False)


def test_h2c_upgrade_from_http1(gateway: GatewayProcess) -> None:
    result = curl("-v", "--http2", f"{gateway.url}/health")
    assert result.returncode == 0, result.stderr
    assert "Upgrade: h2c" in result.stderr
    assert "HTTP/1.1 101" in result.stderr
    assert "HTTP/2 200" in result.stderr
    assert '"status":"ok"' in result.stdout


def test_curl_prior_knowledge_streams_a_reply(gateway: GatewayProcess, agent_folder) -> None:
    with httpx.Client(base_url=gateway.url, http1=False, http2=True,
                      headers=gateway.headers) as client:
        deploy(client, "echo", agent_folder)
        sid = create_session(client, "echo")["id"]
    result = curl("--http2-prior-knowledge", "-N", "-H", f"Authorization: Bearer {gateway.api_key}",
                  "-H", "Content-Type: application/json", "-d", '{"content": "hello there"}',
                  "-w", "%{http_version}", f"{gateway.url}/api/sessions/{sid}/messages")
    assert result.returncode == 0, result.stderr
    body, _, version = result.stdout.rpartition("\n\n")
    assert version == "2"
    events = parse_sse([body.encode() + b"\n\n"])
    assert events[-1].event == "done"
    assert "hello there" in reply_text(events)


@pytest.mark.parametrize(("http2", "expected"), [(True, "HTTP/2"), (False, "HTTP/1.1")])
def test_tls_negotiates_protocol_with_alpn_and_streams(
    tls_gateway: TlsGateway, agent_folder, http2: bool, expected: str
) -> None:
    gateway, context = tls_gateway
    assert gateway.url.startswith("https://")
    with httpx.Client(base_url=gateway.url, http2=http2, verify=context,
                      headers=gateway.headers) as client:
        response = client.get("/health")
        assert response.http_version == expected
        deploy(client, f"echo-{int(http2)}", agent_folder)
        sid = create_session(client, f"echo-{int(http2)}")["id"]
        events = send_message(client, sid, "over tls")
    assert events[-1].event == "done"
