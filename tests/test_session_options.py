"""A session's own options (`POST /api/sessions` beside `agent`, `PATCH .../config`): checked
strictly, stored with the session, shown as its `config`, kept across pause, resume (warm
and cold) and fork; `extraEnv` reaches the sandbox. The Claude backend's use of them is
in tests/test_claude_backend.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.backend import AgentSpec
from runner.sandbox import SandboxSpec, SandboxStartError, session_env
from tests.conftest import deploy, make_agent_folder, make_client, send_message
from tests.sandbox_helpers import pool_of, wait_for_pool
from tests.test_warm_pool import pooled_gateway
from wire.session_config import SESSION_KEY, ConfigError, check_config, patch_config

FULL_CONFIG: dict[str, Any] = {
    "systemPrompt": "You are terse.",
    "model": "claude-stub-other",
    "extraEnv": {"GREETING": "hello from extraEnv", "SECRET_TOKEN": "s3cret"},
    "mcpServers": {"files": {"command": "mcp-files", "args": ["--root", "/workspace"],
                             "env": {"MCP_TOKEN": "t0ken"}},
                   "remote": {"url": "https://mcp.example.com/mcp"}},
    "permissionMode": "default",
    "allowedTools": ["Read", "Bash(git log:*)"],
    "disallowedTools": ["WebFetch"],
    "betas": ["context-1m-2025-08-07"],
    "subagents": {"reviewer": {"description": "Reviews code", "prompt": "Review it.",
                               "tools": ["Read"], "model": "haiku", "maxTurns": 3}},
    "initialAgent": "reviewer",
}


@pytest.fixture
def agent(client: httpx.Client, agent_folder: Path) -> str:
    deploy(client, "echo", agent_folder)
    return "echo"


def create(client: httpx.Client, agent: str, **config: Any) -> httpx.Response:
    return client.post("/api/sessions", json={"agent": agent, **config})


def created(client: httpx.Client, agent: str, **config: Any) -> dict[str, Any]:
    response = create(client, agent, **config)
    assert response.status_code == 201, response.text
    return response.json()["session"]


def exec_out(client: httpx.Client, sid: str, command: str) -> str:
    response = client.post(f"/api/sessions/{sid}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    return response.json()["stdout"]


def patch(client: httpx.Client, sid: str, body: Any) -> httpx.Response:
    return client.patch(f"/api/sessions/{sid}/config", json=body)


def test_create_stores_the_options_and_shows_them_as_config_with_env_values_masked(
    client: httpx.Client, agent: str
) -> None:
    session = created(client, agent, **FULL_CONFIG)
    config = session["config"]
    assert config["extraEnv"] == {"GREETING": "***", "SECRET_TOKEN": "***"}
    assert config["mcpServers"]["files"]["env"] == {"MCP_TOKEN": "***"}
    assert config["mcpServers"]["remote"] == {"url": "https://mcp.example.com/mcp"}
    shown = {k: v for k, v in config.items() if k not in ("extraEnv", "mcpServers")}
    assert shown == {k: v for k, v in FULL_CONFIG.items() if k not in ("extraEnv", "mcpServers")}
    assert session["model"] == "claude-stub-other"
    assert client.get(f"/api/sessions/{session['id']}").json()["session"]["config"] == config


def test_a_session_without_options_has_an_empty_config(client: httpx.Client, agent: str) -> None:
    session = created(client, agent)
    assert (session["config"], session["model"]) == ({}, None)


def test_options_given_as_null_are_not_set(client: httpx.Client, agent: str) -> None:
    session = created(client, agent, model=None, credentialId=None, systemPrompt=None)
    assert session["config"] == {}


def test_extra_env_reaches_the_sandbox_over_the_agent_env(
    client: httpx.Client, tmp_path: Path
) -> None:
    deploy(client, "envy", make_agent_folder(
        tmp_path, "envy", {"backend": "mock", "env": {"GREETING": "agent", "ONLY_AGENT": "a"}}))
    sid = created(client, "envy", extraEnv={"GREETING": "session"})["id"]
    assert exec_out(client, sid, 'echo "$GREETING $ONLY_AGENT"') == "session a\n"


def test_options_survive_pause_resume_and_a_cold_resume(client: httpx.Client, agent: str
                                                         ) -> None:
    session = created(client, agent, **FULL_CONFIG)
    sid = session["id"]
    assert client.post(f"/api/sessions/{sid}/pause").json()["session"]["config"] == (
        session["config"])
    assert client.post(f"/api/sessions/{sid}/resume").json()["session"]["config"] == (
        session["config"])
    assert client.post(f"/api/sessions/{sid}/stop").status_code == 200
    resumed = client.post(f"/api/sessions/{sid}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["session"]["config"] == session["config"]
    assert exec_out(client, sid, 'echo "$GREETING"') == "hello from extraEnv\n"


def test_a_fork_inherits_the_options_and_its_sandbox_the_env(
    client: httpx.Client, agent: str
) -> None:
    parent = created(client, agent, **FULL_CONFIG)
    send_message(client, parent["id"], "hello")
    fork = client.post(f"/api/sessions/{parent['id']}/fork")
    assert fork.status_code == 201, fork.text
    assert fork.json()["session"]["config"] == parent["config"]
    fork_id = fork.json()["session"]["id"]
    assert client.post(f"/api/sessions/{fork_id}/resume").status_code == 200
    assert exec_out(client, fork_id, 'echo "$GREETING"') == "hello from extraEnv\n"


def test_turns_run_with_options_on_the_mock_agent(client: httpx.Client, agent: str) -> None:
    sid = created(client, agent, **FULL_CONFIG)["id"]
    assert send_message(client, sid, "hi")[-1].data["status"] == "ok"


@pytest.mark.parametrize(("field", "value", "says"), [
    ("systemPrompt", "", "`systemPrompt`"),
    ("systemPrompt", 7, "`systemPrompt`"),
    ("systemPrompt", "x" * 100_001, "`systemPrompt`"),
    ("model", "", "`model`"),
    ("model", "--dangerously-skip-permissions", "`model`"),
    ("model", ["claude"], "`model`"),
    ("extraEnv", ["A=1"], "`extraEnv`"),
    ("extraEnv", {"1BAD": "x"}, "`extraEnv`"),
    ("extraEnv", {"GOOD": 1}, "`extraEnv`.GOOD"),
    ("extraEnv", {"GOOD": "a\u0000b"}, "`extraEnv`.GOOD"),
    ("extraEnv", {f"V{i}": "x" for i in range(65)}, "`extraEnv`"),
    ("mcpServers", [], "`mcpServers`"),
    ("mcpServers", {"x": {}}, "`mcpServers`.x"),
    ("mcpServers", {"x": {"url": "https://a", "command": "b"}}, "`mcpServers`.x"),
    ("mcpServers", {"x": {"url": "file:///etc/passwd"}}, "`mcpServers`.x.url"),
    ("mcpServers", {"x": {"command": "a", "args": "b"}}, "`mcpServers`.x.args"),
    ("mcpServers", {"x": {"command": "a", "cwd": "/"}}, "unknown field `cwd`"),
    ("mcpServers", {"bad name": {"command": "a"}}, "`mcpServers` name"),
    ("permissionMode", "acceptEdits", "`permissionMode`"),
    ("allowedTools", "Read", "`allowedTools`"),
    ("allowedTools", ["Read,Write"], "`allowedTools`[0]"),
    ("allowedTools", ["-x"], "`allowedTools`[0]"),
    ("disallowedTools", [""], "`disallowedTools`[0]"),
    ("disallowedTools", ["x"] * 129, "`disallowedTools`"),
    ("betas", ["bad beta"], "`betas`[0]"),
    ("betas", "context-1m-2025-08-07", "`betas`"),
    ("subagents", {"r": {"prompt": "p"}}, "`subagents`.r.description"),
    ("subagents", {"r": {"description": "d", "prompt": "p", "maxTurns": 0}},
     "`subagents`.r.maxTurns"),
    ("subagents", {"r": {"description": "d", "prompt": "p", "hooks": {}}}, "unknown field"),
    ("subagents", ["r"], "`subagents`"),
    ("initialAgent", "-p", "`initialAgent`"),
    ("initialAgent", 3, "`initialAgent`"),
])
def test_a_bad_option_is_a_400_naming_it_and_creates_nothing(
    client: httpx.Client, agent: str, field: str, value: Any, says: str
) -> None:
    response = create(client, agent, **{field: value})
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]
    assert client.get("/api/sessions").json()["sessions"] == []


@pytest.mark.parametrize("name", ["PATH", "HOME", "ASH_SESSION_ID", "ANTHROPIC_BASE_URL",
                                  "ANTHROPIC_API_KEY", "LD_PRELOAD", "PYTHONPATH",
                                  "CLAUDE_CONFIG_DIR"])
def test_extra_env_may_not_set_what_the_runner_controls(
    client: httpx.Client, agent: str, name: str
) -> None:
    response = create(client, agent, extraEnv={name: "x"})
    assert response.status_code == 400
    assert f"{name} is set by the runner" in response.json()["error"]


def test_an_unknown_credential_id_is_refused(
    client: httpx.Client, agent: str
) -> None:
    response = create(client, agent, credentialId="cred-1")
    assert response.status_code == 400
    assert "`credentialId`" in response.json()["error"]
    assert client.get("/api/sessions").json()["sessions"] == []


def test_patch_merges_the_given_fields_and_null_removes_one(
    client: httpx.Client, agent: str
) -> None:
    session = created(client, agent, model="claude-a", allowedTools=["Read"],
                      systemPrompt="Be brief.")
    response = patch(client, session["id"], {"model": "claude-b", "betas": ["beta-1"],
                                             "allowedTools": None})
    assert response.status_code == 200, response.text
    config = response.json()["session"]["config"]
    assert config == {"model": "claude-b", "betas": ["beta-1"], "systemPrompt": "Be brief."}
    assert response.json()["session"]["model"] == "claude-b"
    assert client.get(f"/api/sessions/{session['id']}").json()["session"]["config"] == config


@pytest.mark.parametrize(("body", "says"), [
    ({"systemPrompt": "new"}, "`systemPrompt` cannot be changed"),
    ({"extraEnv": {"A": "b"}}, "`extraEnv` cannot be changed"),
    ({"model": 5}, "`model`"),
    ({"subagents": {"r": {}}}, "`subagents`.r.description"),
    ({"initialAgent": "../x"}, "`initialAgent`"),
    ([], "JSON object"),
])
def test_a_bad_patch_is_a_400_and_changes_nothing(
    client: httpx.Client, agent: str, body: Any, says: str
) -> None:
    session = created(client, agent, model="claude-a")
    response = patch(client, session["id"], body)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]
    assert client.get(f"/api/sessions/{session['id']}").json()["session"]["config"] == {
        "model": "claude-a"}


def test_patch_of_an_unknown_session_is_404_and_of_an_ended_one_410(
    client: httpx.Client, agent: str
) -> None:
    assert patch(client, "no-such-session", {"model": "m"}).status_code == 404
    sid = created(client, agent)["id"]
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert patch(client, sid, {"model": "m"}).status_code == 410


def test_the_session_config_option_is_the_gateways_alone(client: httpx.Client, agent: str
                                                         ) -> None:
    sid = created(client, agent)["id"]
    response = client.post(f"/api/sessions/{sid}/messages",
                           json={"content": "hi", "options": {"sessionConfig": {}}})
    assert response.status_code == 400
    assert "sessionConfig" in response.json()["error"]


def test_the_runner_refuses_reserved_extra_env_names_too(tmp_path: Path) -> None:
    spec = SandboxSpec("s", AgentSpec("a", str(tmp_path), config={
        SESSION_KEY: {"extraEnv": {"ASH_MODEL_API_KEY": "stolen"}}}), tmp_path)
    with pytest.raises(SandboxStartError, match="ASH_MODEL_API_KEY"):
        session_env(spec)


def test_the_shared_check_refuses_an_oversized_config() -> None:
    subagents = {f"a{i}": {"description": "d", "prompt": "p" * 90_000} for i in range(4)}
    with pytest.raises(ConfigError, match="exceeds"):
        check_config({"subagents": subagents})
    with pytest.raises(ConfigError, match="exceeds"):
        patch_config({"systemPrompt": "s" * 90_000}, {"subagents": subagents})


def test_a_session_from_the_warm_pool_gets_its_extra_env_in_the_bind(tmp_path: Path) -> None:
    with pooled_gateway(tmp_path / "data", 1) as gateway, make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        wait_for_pool(client, 1)
        sid = created(client, "echo", extraEnv={"GREETING": "bound"}, model="claude-x")["id"]
        assert pool_of(client)["served"] == 1
        assert exec_out(client, sid, 'echo "$GREETING"') == "bound\n"
