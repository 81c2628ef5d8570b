from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from bench.model_stub import StubProcess
from tests.gateway_process import GatewayProcess
from tests.sse_client import SseEvent, parse_sse

TlsGateway = tuple[GatewayProcess, ssl.SSLContext]


def make_agent_folder(root: Path, name: str = "echo", config: dict | None = None) -> Path:
    folder = root / f"agent-src-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "CLAUDE.md").write_text(f"# {name}\nYou are a test agent.\n")
    (folder / "agent.json").write_text(json.dumps(config or {"backend": "mock"}))
    return folder


@pytest.fixture
def agent_folder(tmp_path: Path) -> Path:
    return make_agent_folder(tmp_path)


@pytest.fixture
def stub() -> Iterator[StubProcess]:
    """The Anthropic-protocol model stub, a process of its own."""
    with StubProcess() as process:
        yield process


@pytest.fixture
def model_key() -> str:
    """The model key the gateway (the runner) holds; a module may override it."""
    return "test-key"


@pytest.fixture
def model_gateway(tmp_path: Path, stub: StubProcess, model_key: str) -> Iterator[GatewayProcess]:
    """A gateway whose runner forwards model calls to the stub with `model_key`."""
    process = GatewayProcess(tmp_path / "data", extra_env={
        "ANTHROPIC_BASE_URL": stub.url, "ANTHROPIC_API_KEY": model_key}).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def server_args() -> list[str]:
    """Gateway flags choosing the HTTP server; a module may override it (--server granian)."""
    return []


@pytest.fixture
def gateway(tmp_path: Path, server_args: list[str]) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "data", extra_args=server_args).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def tls_gateway(tmp_path: Path, server_args: list[str]) -> Iterator[TlsGateway]:
    """A gateway serving HTTPS with a certificate from a throwaway CA, and a context trusting it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        with open(certfile, "ab") as handle:
            handle.write(extra.bytes())
    context = ssl.create_default_context()
    ca.configure_trust(context)
    gateway = GatewayProcess(tmp_path / "data", extra_args=[
        *server_args, "--certfile", str(certfile), "--keyfile", str(keyfile)]).start()
    try:
        yield gateway, context
    finally:
        gateway.stop()


def make_client(gateway: GatewayProcess, protocol: str = "h2") -> httpx.Client:
    """HTTP/2 with prior knowledge (`h2`) or plain HTTP/1.1 (`http1.1`)."""
    http2 = protocol == "h2"
    return httpx.Client(base_url=gateway.url, http1=not http2, http2=http2,
                        headers=gateway.headers, timeout=30)


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with make_client(gateway) as c:
        yield c


def deploy(client: httpx.Client, name: str, folder: Path) -> dict:
    response = client.post("/api/agents", json={"name": name, "path": str(folder)})
    assert response.status_code == 201, response.text
    return response.json()["agent"]


def create_session(client: httpx.Client, agent: str) -> dict:
    response = client.post("/api/sessions", json={"agent": agent})
    assert response.status_code == 201, response.text
    return response.json()["session"]


def send_message(client: httpx.Client, session_id: str, content: str | list[dict],
                 **extra: object) -> list[SseEvent]:
    with client.stream("POST", f"/api/sessions/{session_id}/messages",
                       json={"content": content, **extra}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.iter_raw())


@pytest.fixture
def session(client: httpx.Client, agent_folder: Path) -> dict:
    deploy(client, "echo", agent_folder)
    return create_session(client, "echo")
