"""The model proxy: a bubblewrap sandbox (no network of its own) runs the real SDK against
the model stub through the bridge's loopback relay and the runner, and the runner's key
never enters the sandbox."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.model_stub import StubProcess, user_prompts
from runner.model_proxy import ModelProxy, ModelUpstream, allowed
from runner.sandbox import MODEL_PROXY_PORT, BridgeSettings
from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.gateway_process import GatewayProcess
from tests.split_cluster import Cluster
from tests.sse_client import reply_text
from wire import events
from wire.events import Event

RUNNER_KEY = "sk-ant-runner-secret-7f3a9c"
SYSTEM_PROMPT_MARK = "You are a test agent."
MODEL_ENV = {"CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "5000"}


@pytest.fixture
def model_key() -> str:
    return RUNNER_KEY


@pytest.fixture
def gateway(model_gateway: GatewayProcess) -> GatewayProcess:
    return model_gateway


@pytest.fixture
def sid(client: httpx.Client, tmp_path: Path) -> str:
    """A session of an agent that names no backend and carries no credentials: the
    runner's key makes it a `claude` agent."""
    deploy(client, "plain", make_agent_folder(tmp_path, "plain", {"env": MODEL_ENV}))
    return create_session(client, "plain")["id"]


def exec_in(client: httpx.Client, sid: str, command: str) -> dict[str, Any]:
    response = client.post(f"/api/sessions/{sid}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    return response.json()


def agent_calls(stub: StubProcess) -> list[dict[str, Any]]:
    return [r for r in stub.requests("/v1/messages")
            if SYSTEM_PROMPT_MARK in str(r["body"].get("system"))]


def test_two_turns_through_the_proxy_with_the_key_added_outside(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    send_message(client, sid, "my name is Ada")
    second = send_message(client, sid, "what is my name?")
    assert second[-1].data["status"] == "ok"
    assert "Earlier you said: my name is Ada." in reply_text(second)
    calls = agent_calls(stub)
    assert len(calls) == 2
    assert user_prompts(calls[1]["body"]["messages"]) == ["my name is Ada", "what is my name?"]
    for call in stub.requests(None):
        assert call["headers"].get("x-api-key") == RUNNER_KEY
        assert "authorization" not in call["headers"]


def test_the_key_never_enters_the_sandbox(client: httpx.Client, sid: str) -> None:
    send_message(client, sid, "hello")
    env = exec_in(client, sid, "env")["stdout"]
    assert RUNNER_KEY not in env
    assert f"ASH_MODEL_BASE_URL=http://127.0.0.1:{MODEL_PROXY_PORT}" in env
    token = next(line.split("=", 1)[1] for line in env.splitlines()
                 if line.startswith("ASH_MODEL_API_KEY="))
    assert token and token != RUNNER_KEY
    listing = exec_in(client, sid, "ls -d /*")["stdout"].split()
    own = [d for d in listing if d not in ("/usr", "/proc", "/sys", "/dev")
           and not d.startswith(("/lib", "/bin", "/sbin"))]
    assert {"/workspace", "/tmp", "/agent"} <= set(own)
    found = exec_in(client, sid, f"grep -rls {RUNNER_KEY} {' '.join(own)} 2>/dev/null; true")
    assert found["stdout"] == "", found
    processes = exec_in(client, sid, "cat /proc/*/environ /proc/*/cmdline 2>/dev/null; true")
    assert RUNNER_KEY not in processes["stdout"]


PROBE = """python3 -c '
import os, sys, urllib.request, urllib.error
url = os.environ["ASH_MODEL_BASE_URL"] + sys.argv[1]
request = urllib.request.Request(url, method=sys.argv[2], data=b"{}" if sys.argv[2] == "POST"
    else None, headers={"x-api-key": sys.argv[3], "content-type": "application/json"})
try:
    print(urllib.request.urlopen(request, timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
' """


@pytest.mark.parametrize(("path", "method", "token_from_env"), [
    ("/v1/models", "GET", True),
    ("/v1/messages", "GET", True),
    ("/v1/complete", "POST", True),
    ("/v1/messages", "POST", False),
], ids=["models", "get-messages", "other-post", "no-token"])
def test_non_messages_requests_are_refused_and_never_reach_the_upstream(
    client: httpx.Client, sid: str, stub: StubProcess, path: str, method: str,
    token_from_env: bool
) -> None:
    token = '"$ASH_MODEL_API_KEY"' if token_from_env else "wrong-token"
    result = exec_in(client, sid, f"{PROBE} {path} {method} {token}")
    assert result["stdout"].strip() == "403", result
    assert stub.requests(None) == []


def test_an_upstream_failure_becomes_an_error_event(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    stub.inject("status", status=500, times=0)
    events_ = send_message(client, sid, "hello?")
    assert [e.event for e in events_][-4:] == ["error", "turn_complete", "message", "done"]
    assert events_[-1].data["status"] == "error"
    assert "500" in next(e.data for e in events_ if e.event == "error")["error"]


def test_only_messages_calls_are_allowed() -> None:
    assert allowed("POST", "/v1/messages?beta=true")
    assert allowed("POST", "/v1/messages/count_tokens")
    assert not allowed("GET", "/v1/messages")
    assert not allowed("POST", "/v1/messages/../models")
    assert not allowed("POST", "/v1/models")


def test_unreachable_upstream_ends_the_request_with_an_error() -> None:
    async def scenario() -> list[Event]:
        sent: list[Event] = []
        proxy = ModelProxy(ModelUpstream("http://127.0.0.1:9", "k"), "tok",
                           lambda kind, data: sent.append(Event(kind, data)))
        proxy.on_frame(Event(events.MODEL_REQUEST, orjson.dumps({
            "id": "r1", "method": "POST", "path": "/v1/messages",
            "headers": {"x-api-key": "tok"}, "body": base64.b64encode(b"{}").decode()})))
        for _ in range(100):
            if sent:
                break
            await asyncio.sleep(0.05)
        await proxy.close()
        return sent

    [end] = asyncio.run(scenario())
    assert end.type == events.MODEL_RESPONSE_END
    assert "upstream" in orjson.loads(end.data)["error"]


def test_the_default_backend_is_claude_only_when_the_runner_has_a_key() -> None:
    assert BridgeSettings.from_env({"ANTHROPIC_API_KEY": "k"}).agent_backend == "claude"
    assert BridgeSettings.from_env({}).agent_backend == "mock"
    assert BridgeSettings.from_env({"ANTHROPIC_API_KEY": "k", "ASH_BACKEND": "mock"}
                                   ).agent_backend == "mock"
    assert ModelUpstream.from_env({}) is None
    assert ModelUpstream.from_env({"ANTHROPIC_API_KEY": "k"}) == ModelUpstream(
        "https://api.anthropic.com", "k")


def test_through_a_runner_the_key_lives_on_the_runner_only(
    tmp_path: Path, stub: StubProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Claude CLI's start-up loads both cores: a 0.15 s heartbeat could miss three beats.
    with Cluster(tmp_path, heartbeat=1.0).start() as cluster:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", RUNNER_KEY)
        cluster.add_runners("r1")
        with cluster.client() as client:
            deploy(client, "plain", make_agent_folder(tmp_path, "plain", {"env": MODEL_ENV}))
            session = create_session(client, "plain")["id"]
            send_message(client, session, "my name is Ada")
            second = send_message(client, session, "what is my name?")
            assert "Earlier you said: my name is Ada." in reply_text(second)
            assert RUNNER_KEY not in exec_in(client, session, "env")["stdout"]
    assert [r["headers"]["x-api-key"] for r in agent_calls(stub)] == [RUNNER_KEY] * 2
