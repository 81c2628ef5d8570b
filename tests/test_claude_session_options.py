"""A session's options and a message's model settings reach the real Claude Agent SDK and
its CLI: what the model stub (`bench/model_stub.py`) is sent, what the CLI's `init`
message reports, and the flags the CLI runs with (read from /proc inside the sandbox)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.model_stub import StubProcess, user_prompts
from runner.bridge.agent import AgentContext, AgentLoadError
from runner.bridge.claude_agent import ClaudeAgent, ClaudeAgentError, launch_options
from tests.conftest import send_message
from tests.gateway_process import GatewayProcess
from tests.sse_client import SseEvent, reply_text
from tests.test_claude_backend import SYSTEM_PROMPT_MARK, claude_agent, exec_in, of_type
from wire.session_config import SESSION_CONFIG_ENV, SESSION_CONFIG_OPTION

SESSION_PROMPT = "You are the session's own prompt."
CLI_ARGS = ("for p in /proc/[0-9]*; do echo \"${p#/proc/} $(tr '\\0' ' ' < $p/cmdline)\"; "
            "done | grep -a '^[0-9]* [^ ]*/claude --output-format'")
"""The CLI's pid and command line, as the sandbox's process table shows them."""


@pytest.fixture
def gateway(model_gateway: GatewayProcess) -> GatewayProcess:
    return model_gateway


@pytest.fixture
def agent(client: httpx.Client, tmp_path: Path, stub: StubProcess) -> str:
    return claude_agent(client, tmp_path, stub)


def session_with(client: httpx.Client, agent: str, **config: Any) -> str:
    response = client.post("/api/sessions", json={"agent": agent, **config})
    assert response.status_code == 201, response.text
    return response.json()["session"]["id"]


def model_calls(stub: StubProcess) -> list[dict[str, Any]]:
    """The main thread's Messages requests (the CLI's side calls carry no tools)."""
    return [r for r in stub.requests("/v1/messages") if r["body"].get("tools")]


def init_message(events: list[SseEvent]) -> dict[str, Any]:
    return next(m for m in of_type(events, "message") if m.get("subtype") == "init")


def cli_args(client: httpx.Client, sid: str) -> str:
    return exec_in(client, sid, CLI_ARGS)["stdout"]


def test_system_prompt_replaces_claude_md(
    client: httpx.Client, agent: str, stub: StubProcess
) -> None:
    sid = session_with(client, agent, systemPrompt=SESSION_PROMPT)
    assert send_message(client, sid, "hello")[-1].data["status"] == "ok"
    system = str(model_calls(stub)[-1]["body"]["system"])
    assert SESSION_PROMPT in system
    assert SYSTEM_PROMPT_MARK not in system


def test_the_cli_starts_with_the_session_options_before_the_first_turn(
    client: httpx.Client, agent: str
) -> None:
    sid = session_with(client, agent, systemPrompt=SESSION_PROMPT, disallowedTools=["Bash"])
    before = cli_args(client, sid)
    assert "--disallowedTools Bash" in before
    send_message(client, sid, "hello")
    assert cli_args(client, sid) == before


def test_session_model_is_used_and_a_patched_model_from_the_next_turn(
    client: httpx.Client, agent: str, stub: StubProcess
) -> None:
    sid = session_with(client, agent, model="claude-stub-session")
    send_message(client, sid, "first")
    response = client.patch(f"/api/sessions/{sid}/config", json={"model": "claude-stub-patched"})
    assert response.status_code == 200, response.text
    send_message(client, sid, "second")
    send_message(client, sid, "third", model="claude-stub-message")
    models = [call["body"]["model"] for call in model_calls(stub)]
    assert models == ["claude-stub-session", "claude-stub-patched", "claude-stub-message"]


def test_tools_subagents_and_permission_mode_reach_the_cli(
    client: httpx.Client, agent: str, stub: StubProcess
) -> None:
    sid = session_with(
        client, agent, disallowedTools=["WebFetch"], allowedTools=["Read"],
        permissionMode="default",
        subagents={"reviewer": {"description": "Reviews code", "prompt": "Review it."}})
    init = init_message(send_message(client, sid, "hello"))
    assert "WebFetch" not in init["tools"] and "Read" in init["tools"]
    assert "reviewer" in init["agents"]
    assert init["permissionMode"] == "default"
    tools = [tool["name"] for tool in model_calls(stub)[-1]["body"]["tools"]]
    assert "WebFetch" not in tools
    args = cli_args(client, sid)
    assert "--allowedTools Read" in args and "--disallowedTools WebFetch" in args


def test_patched_tools_restart_the_cli_on_the_same_conversation(
    client: httpx.Client, agent: str, stub: StubProcess
) -> None:
    sid = session_with(client, agent)
    send_message(client, sid, "remember the word fig")
    response = client.patch(f"/api/sessions/{sid}/config", json={"disallowedTools": ["Bash"]})
    assert response.status_code == 200
    after = send_message(client, sid, "which word?")
    assert "Bash" not in init_message(after)["tools"]
    assert user_prompts(model_calls(stub)[-1]["body"]["messages"]) == [
        "remember the word fig", "which word?"]
    assert "Earlier you said: remember the word fig." in reply_text(after)


def test_mcp_servers_and_the_initial_agent_reach_the_cli(
    client: httpx.Client, agent: str
) -> None:
    sid = session_with(
        client, agent, mcpServers={"files": {"command": "/bin/true"}},
        subagents={"reviewer": {"description": "Reviews code", "prompt": "Review it."}},
        initialAgent="reviewer")
    init = init_message(send_message(client, sid, "hello"))
    assert [server["name"] for server in init["mcp_servers"]] == ["files"]
    args = cli_args(client, sid)
    assert "--agent reviewer" in args and "--mcp-config" in args


def test_extra_env_is_in_the_agents_tool_environment(client: httpx.Client, agent: str) -> None:
    sid = session_with(client, agent, extraEnv={"GREETING": "from-extra-env"})
    events = send_message(client, sid, "RUN_BASH echo $GREETING")
    assert "from-extra-env" in str(of_type(events, "tool_result")[0]["content"])


def test_message_model_settings_start_the_cli_with_them_for_that_message(
    client: httpx.Client, agent: str, stub: StubProcess
) -> None:
    sid = session_with(client, agent)
    send_message(client, sid, "plain")
    assert "--effort" not in cli_args(client, sid)
    events = send_message(client, sid, "tuned", effort="high", maxBudgetUsd=5,
                          thinking={"type": "enabled", "budgetTokens": 2048})
    assert events[-1].data["status"] == "ok"
    args = cli_args(client, sid)
    assert "--effort high" in args and "--max-budget-usd 5.0" in args
    assert "--max-thinking-tokens 2048" in args
    assert model_calls(stub)[-1]["body"]["output_config"] == {"effort": "high"}
    send_message(client, sid, "plain again")
    assert "--effort" not in cli_args(client, sid)


def test_output_format_gives_the_cli_the_json_schema(client: httpx.Client, agent: str) -> None:
    sid = session_with(client, agent)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    with client.stream("POST", f"/api/sessions/{sid}/messages", json={
            "content": "answer in JSON", "maxTurns": 2,
            "outputFormat": {"type": "json_schema", "schema": schema}}) as response:
        assert response.status_code == 200
        response.read()
    assert '--json-schema {"type": "object"' in cli_args(client, sid)


def test_the_bridge_refuses_a_session_config_that_breaks_the_rules() -> None:
    with pytest.raises(ClaudeAgentError, match="`allowedTools`"):
        launch_options({SESSION_CONFIG_OPTION: {"allowedTools": ["--evil"]}})
    with pytest.raises(AgentLoadError, match="`initialAgent`"):
        ClaudeAgent(AgentContext(Path("/agent"), Path("/home"), "", environ={
            "ASH_MODEL_API_KEY": "k", SESSION_CONFIG_ENV: '{"initialAgent": "-p"}'}))


def test_the_bridge_ignores_message_settings_outside_their_bounds() -> None:
    assert launch_options({"maxBudgetUsd": -1, "effort": "extreme", "thinking": {
        "type": "enabled", "budgetTokens": 10}, "outputFormat": {"type": "text"}}) == {}
    assert launch_options({"thinking": {"type": "enabled"}})["thinking"] == {
        "type": "enabled", "budget_tokens": 10_000}
