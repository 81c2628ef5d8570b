"""Model credentials: stored encrypted under ASH_CREDENTIAL_KEY, never returned, never
logged; a session created with one sends its model calls through the runner's model proxy
with that key (the real Claude Agent SDK against the model stub), and the key never enters
the sandbox."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidTag

from bench.model_stub import StubProcess
from gateway.credentials import CredentialCipher, CredentialKeyError, CredentialVault
from gateway.http import ApiError
from gateway.store import Store
from tests.conftest import deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import TEST_CREDENTIAL_KEY, GatewayProcess
from tests.split_cluster import Cluster
from tests.sse_client import reply_text
from wire.credentials import MAX_KEY_CHARS, ModelCredential, sandbox_env

SESSION_KEY = "sk-ant-session-credential-4b9e1d7c"
SYSTEM_PROMPT_MARK = "You are a test agent."
MODEL_ENV = {"CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "5000"}


def add_credential(client: httpx.Client, kind: str = "anthropic", key: str = SESSION_KEY,
                   **extra: Any) -> dict[str, Any]:
    response = client.post("/api/credentials", json={"type": kind, "key": key, **extra})
    assert response.status_code == 201, response.text
    return response.json()["credential"]


def exec_in(client: httpx.Client, sid: str, command: str) -> str:
    response = client.post(f"/api/sessions/{sid}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    return response.json()["stdout"]


def agent_calls(stub: StubProcess) -> list[dict[str, Any]]:
    return [r for r in stub.requests("/v1/messages")
            if SYSTEM_PROMPT_MARK in str(r["body"].get("system"))]


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Every regular file under `root` (links not followed; disk images skipped: what the
    sandbox sees is searched from inside it) whose bytes contain `needle`."""
    found = []
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file() or path.suffix == ".img":
            continue
        try:
            if needle in path.read_bytes():
                found.append(path)
        except PermissionError:
            continue
    return found


def assert_no_trace_in_sandbox(client: httpx.Client, sid: str, key: str) -> None:
    env = exec_in(client, sid, "printenv")
    assert key not in env and "ASH_MODEL_API_KEY=" in env
    environs = exec_in(client, sid, "cat /proc/self/environ /proc/[0-9]*/environ "
                                    "/proc/[0-9]*/cmdline 2>/dev/null; true")
    assert key not in environs
    found = exec_in(client, sid, f"grep -rls {key} /workspace /tmp /agent 2>/dev/null; true")
    assert found == ""


# the routes


@pytest.fixture
def gateway_client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with make_client(gateway) as client:
        yield client


def test_a_credential_is_created_listed_and_deleted_without_its_key(
    gateway_client: httpx.Client,
) -> None:
    created = add_credential(gateway_client, label="team A")
    assert set(created) == {"id", "type", "label", "active", "createdAt", "lastUsedAt"}
    assert (created["type"], created["label"], created["active"]) == ("anthropic", "team A", True)
    listed = gateway_client.get("/api/credentials").json()["credentials"]
    assert listed == [created] and created["lastUsedAt"] is None
    assert SESSION_KEY not in gateway_client.get("/api/credentials").text
    deleted = gateway_client.delete(f"/api/credentials/{created['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert gateway_client.get("/api/credentials").json() == {"credentials": []}
    again = gateway_client.delete(f"/api/credentials/{created['id']}")
    assert again.status_code == 404


@pytest.mark.parametrize("body", [
    {"key": "k"},
    {"type": "anthropic"},
    {"type": "vertex", "key": "k"},
    {"type": 3, "key": "k"},
    {"type": "anthropic", "key": 42},
    {"type": "anthropic", "key": "  "},
    {"type": "anthropic", "key": "x" * (MAX_KEY_CHARS + 1)},
    {"type": "anthropic", "key": "two\nlines"},
    {"type": "anthropic", "key": "k", "label": 7},
    {"type": "anthropic", "key": "k", "label": "l" * 201},
], ids=["no-type", "no-key", "unknown-type", "type-not-string", "key-not-string",
        "blank-key", "oversize-key", "key-with-newline", "label-not-string", "long-label"])
def test_bad_credential_input_is_refused_and_stores_nothing(
    gateway_client: httpx.Client, body: dict[str, Any],
) -> None:
    response = gateway_client.post("/api/credentials", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["statusCode"] == 400
    assert gateway_client.get("/api/credentials").json() == {"credentials": []}


def test_an_unknown_credential_id_refuses_the_session_and_creates_none(
    gateway_client: httpx.Client, tmp_path: Path,
) -> None:
    deploy(gateway_client, "echo", make_agent_folder(tmp_path))
    for credential_id in ("no-such-credential", 7):
        response = gateway_client.post("/api/sessions", json={
            "agent": "echo", "credentialId": credential_id})
        assert response.status_code == 400, response.text
        assert "credentialId" in response.json()["error"]
    assert gateway_client.get("/api/sessions").json()["sessions"] == []


def test_without_a_credential_key_the_routes_say_what_is_missing(tmp_path: Path) -> None:
    keyless = GatewayProcess(tmp_path / "data", extra_env={"ASH_CREDENTIAL_KEY": ""}).start()
    try:
        with make_client(keyless) as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            answers = [client.post("/api/credentials", json={"type": "anthropic", "key": "k"}),
                       client.get("/api/credentials"),
                       client.delete("/api/credentials/any"),
                       client.post("/api/sessions", json={"agent": "echo",
                                                          "credentialId": "any"})]
    finally:
        keyless.stop()
    for response in answers:
        assert response.status_code == 503
        assert "ASH_CREDENTIAL_KEY" in response.json()["error"]


def test_a_malformed_credential_key_stops_the_gateway_at_start(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", "0", "--data-dir", str(tmp_path / "d")],
        env={"PATH": "/usr/bin:/bin", "ASH_CREDENTIAL_KEY": "too-short"},
        capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "ASH_CREDENTIAL_KEY must be 32 random bytes in base64" in run.stderr


# the cipher and what each type puts in a sandbox


def test_a_sealed_key_opens_only_with_its_key_and_its_row() -> None:
    cipher = CredentialCipher.from_key(TEST_CREDENTIAL_KEY)
    sealed = cipher.encrypt(SESSION_KEY, b"row-1")
    assert SESSION_KEY.encode() not in sealed
    assert cipher.decrypt(sealed, b"row-1") == SESSION_KEY
    with pytest.raises(InvalidTag):
        cipher.decrypt(sealed, b"row-2")
    other = CredentialCipher.from_key("A" * 43 + "=")
    with pytest.raises(InvalidTag):
        other.decrypt(sealed, b"row-1")
    for bad in ("", "not base64!", "QUJD"):
        with pytest.raises(CredentialKeyError):
            CredentialCipher.from_key(bad)
    assert SESSION_KEY not in repr(ModelCredential("anthropic", SESSION_KEY))


def test_only_an_anthropic_credential_stays_out_of_the_sandbox_environment() -> None:
    assert sandbox_env(ModelCredential("anthropic", "k")) == {}
    assert sandbox_env(ModelCredential("openai", "k")) == {"OPENAI_API_KEY": "k"}
    assert sandbox_env(ModelCredential("custom", "k")) == {"ASH_CUSTOM_API_KEY": "k"}
    assert sandbox_env(ModelCredential("bedrock", "k")) == {
        "AWS_BEARER_TOKEN_BEDROCK": "k", "CLAUDE_CODE_USE_BEDROCK": "1"}


# a session that uses one: the real SDK against the stub


@pytest.fixture
def keyless_model_gateway(tmp_path: Path, stub: StubProcess) -> Iterator[GatewayProcess]:
    """A gateway whose runner knows the stub's address but holds no model key."""
    process = GatewayProcess(tmp_path / "data",
                             extra_env={"ANTHROPIC_BASE_URL": stub.url}).start()
    try:
        yield process
    finally:
        process.stop()


def test_a_session_calls_the_model_with_its_credential_which_leaves_no_trace(
    keyless_model_gateway: GatewayProcess, stub: StubProcess, tmp_path: Path,
) -> None:
    gateway = keyless_model_gateway
    with make_client(gateway) as client:
        deploy(client, "plain", make_agent_folder(tmp_path, "plain", {"env": MODEL_ENV}))
        credential = add_credential(client)
        created = client.post("/api/sessions", json={"agent": "plain",
                                                     "credentialId": credential["id"]})
        assert created.status_code == 201, created.text
        assert "notice" not in created.json()
        sid = created.json()["session"]["id"]
        send_message(client, sid, "my name is Ada")
        assert_no_trace_in_sandbox(client, sid, SESSION_KEY)
        [listed] = client.get("/api/credentials").json()["credentials"]
        assert listed["lastUsedAt"] is not None
        # a cold resume: the gateway sends the credential to the new sandbox again
        assert client.post(f"/api/sessions/{sid}/stop").status_code == 200
        assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
        second = send_message(client, sid, "what is my name?")
        assert "Earlier you said: my name is Ada." in reply_text(second)
    calls = agent_calls(stub)
    assert len(calls) == 2
    for call in stub.requests(None):
        assert call["headers"].get("x-api-key") == SESSION_KEY
    gateway.stop()
    needle = SESSION_KEY.encode()
    assert files_holding(gateway.data_dir, needle) == []
    assert needle not in gateway.stderr_path.read_bytes()


def test_a_deleted_credential_stops_its_session_from_starting_again(
    keyless_model_gateway: GatewayProcess, tmp_path: Path,
) -> None:
    with make_client(keyless_model_gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        credential = add_credential(client)
        sid = client.post("/api/sessions", json={
            "agent": "echo", "credentialId": credential["id"]}).json()["session"]["id"]
        assert client.post(f"/api/sessions/{sid}/stop").status_code == 200
        assert client.delete(f"/api/credentials/{credential['id']}").status_code == 204
        resumed = client.post(f"/api/sessions/{sid}/resume")
        assert resumed.status_code == 409
        assert "credential" in resumed.json()["error"]
        assert client.get(f"/api/sessions/{sid}").json()["session"]["status"] == "stopped"


def echo_session_with(client: httpx.Client, root: Path, kind: str, key: str) -> str:
    """A mock-agent session created with a new credential of `kind`."""
    deploy(client, "echo", make_agent_folder(root))
    credential = add_credential(client, kind, key)
    response = client.post("/api/sessions", json={"agent": "echo",
                                                  "credentialId": credential["id"]})
    assert response.status_code == 201, response.text
    return response.json()["session"]["id"]


def test_an_openai_credential_enters_the_sandbox_as_its_environment(
    gateway_client: httpx.Client, tmp_path: Path,
) -> None:
    sid = echo_session_with(gateway_client, tmp_path, "openai", "sk-openai-visible")
    assert "OPENAI_API_KEY=sk-openai-visible" in exec_in(gateway_client, sid, "printenv")


def test_a_fork_keeps_its_parents_credential(
    gateway_client: httpx.Client, tmp_path: Path,
) -> None:
    sid = echo_session_with(gateway_client, tmp_path, "custom", "custom-key-for-forks")
    send_message(gateway_client, sid, "hello")
    fork = gateway_client.post(f"/api/sessions/{sid}/fork").json()["session"]["id"]
    assert gateway_client.post(f"/api/sessions/{fork}/resume").status_code == 200
    assert "ASH_CUSTOM_API_KEY=custom-key-for-forks" in exec_in(gateway_client, fork,
                                                                "printenv")


def test_through_a_runner_the_credential_crosses_grpc_and_stays_out_of_its_sandbox(
    tmp_path: Path, stub: StubProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Claude CLI's start-up loads both cores: a 0.15 s heartbeat could miss three beats.
    with Cluster(tmp_path, heartbeat=1.0).start() as cluster:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.url)
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
        [runner] = cluster.add_runners("r1")
        with cluster.client() as client:
            deploy(client, "plain", make_agent_folder(tmp_path, "plain", {"env": MODEL_ENV}))
            credential = add_credential(client)
            sid = client.post("/api/sessions", json={
                "agent": "plain", "credentialId": credential["id"]}).json()["session"]["id"]
            send_message(client, sid, "my name is Ada")
            assert_no_trace_in_sandbox(client, sid, SESSION_KEY)
            assert client.post(f"/api/sessions/{sid}/stop").status_code == 200
            assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
            second = send_message(client, sid, "what is my name?")
            assert "Earlier you said: my name is Ada." in reply_text(second)
        logs = [runner.log_path, cluster.gateway.stderr_path]
    assert [r["headers"]["x-api-key"] for r in agent_calls(stub)] == [SESSION_KEY] * 2
    needle = SESSION_KEY.encode()
    assert [log for log in logs if needle in log.read_bytes()] == []
    assert files_holding(tmp_path, needle) == []


def test_credentials_are_scoped_to_their_tenant_and_must_be_active(tmp_path: Path) -> None:
    store = Store(tmp_path / "ash.db")
    vault = CredentialVault(store, CredentialCipher.from_key(TEST_CREDENTIAL_KEY))
    mine = vault.add("tenant-a", ModelCredential("anthropic", SESSION_KEY), None)
    assert vault.list("tenant-b") == []
    for tenant in ("tenant-b", "tenant-a"):
        if tenant == "tenant-a":
            store.db.execute("UPDATE credentials SET active = 0 WHERE id = ?", (mine.id,))
        with pytest.raises(ApiError) as refused:
            vault.check_usable(tenant, mine.id)
        assert refused.value.status == 400
    with pytest.raises(ApiError) as foreign:
        vault.delete("tenant-b", mine.id)
    assert foreign.value.status == 404
    assert [row.id for row in vault.list("tenant-a")] == [mine.id]
    # a sealed key moved to another tenant's row does not open
    store.db.execute("UPDATE credentials SET tenant_id = 'tenant-b', active = 1 WHERE id = ?",
                     (mine.id,))
    with pytest.raises(ApiError) as moved:
        vault.open("tenant-b", mine.id)
    assert moved.value.status == 500
