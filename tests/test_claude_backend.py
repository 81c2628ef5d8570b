"""The Claude backend: the real Claude Agent SDK and its bundled CLI, through a real gateway,
talking to the model stub (`bench/model_stub.py`) instead of the Anthropic API.

The gateway runs the default bubblewrap sandbox and holds the stub's URL and a test key
itself: every model call goes through the model proxy (`tests/test_model_proxy.py`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.model_stub import StubProcess, user_prompts
from runner.bridge.agent import AgentLoadError
from runner.bridge.claude_agent import ClaudeSettings, cli_env, delta_event
from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess, bridge_pids, kill_bridge
from tests.sse_client import SseEvent, parse_sse, reply_text

SYSTEM_PROMPT_MARK = "You are a test agent."
BOUNDED_MODEL_ENV = {"CLAUDE_CODE_MAX_RETRIES": "1", "API_TIMEOUT_MS": "30000"}
"""Every test agent's model calls give up within a minute, so a broken stub fails a test
instead of hanging it (the CLI's defaults retry for minutes)."""
FAILING_MODEL_ENV = {"CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "3000"}
"""No retries and a short request timeout, so an injected failure ends the turn quickly."""


@pytest.fixture
def gateway(model_gateway: GatewayProcess) -> GatewayProcess:
    return model_gateway


def claude_agent(client: httpx.Client, root: Path, stub: StubProcess, name: str = "claude",
                 **env: str) -> str:
    config = {"backend": "claude", "env": {**BOUNDED_MODEL_ENV, **env}}
    deploy(client, name, make_agent_folder(root, name, config))
    return name


@pytest.fixture
def sid(client: httpx.Client, tmp_path: Path, stub: StubProcess) -> str:
    return create_session(client, claude_agent(client, tmp_path, stub))["id"]


def agent_calls(stub: StubProcess) -> list[dict[str, Any]]:
    """The Messages requests the agent made (its system prompt is the agent's CLAUDE.md)."""
    return [r for r in stub.requests("/v1/messages")
            if SYSTEM_PROMPT_MARK in str(r["body"].get("system"))]


def of_type(events: list[SseEvent], event: str) -> list[Any]:
    return [e.data for e in events if e.event == event]


def exec_in(client: httpx.Client, sid: str, command: str) -> dict[str, Any]:
    response = client.post(f"/api/sessions/{sid}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    return response.json()


def test_installed_sdk_is_the_pinned_version_and_bundles_its_cli() -> None:
    import claude_agent_sdk

    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert f'"claude-agent-sdk=={claude_agent_sdk.__version__}"' in pyproject
    bundled = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    assert bundled.is_file() and os.access(bundled, os.X_OK)


def test_agent_settings_come_from_the_claude_section_of_agent_json() -> None:
    settings = ClaudeSettings.resolve(
        {"claude": {"model": "claude-x", "maxTurns": 3, "permissionMode": "acceptEdits"}}, {})
    assert (settings.model, settings.max_turns, settings.permission_mode) == (
        "claude-x", 3, "acceptEdits")
    assert ClaudeSettings.resolve({}, {}).permission_mode == "bypassPermissions"


@pytest.mark.parametrize("claude", [{"permissionMode": "ask-me"}, {"maxTurns": 0}, "yes",
                                    {"maxTurns": "9" * 5000}, {"maxTurns": "\u0663"}])
def test_bad_claude_settings_refuse_to_load(claude: object) -> None:
    with pytest.raises(AgentLoadError):
        ClaudeSettings.resolve({"claude": claude}, {})


def test_runner_model_endpoint_wins_over_the_agent_env() -> None:
    env = cli_env({"ANTHROPIC_BASE_URL": "http://agent", "ASH_MODEL_BASE_URL": "http://proxy",
                   "ASH_MODEL_API_KEY": "session-token"})
    assert env["ANTHROPIC_BASE_URL"] == "http://proxy"
    assert env["ANTHROPIC_API_KEY"] == "session-token"


def test_cli_runs_quietly_unless_the_agent_env_says_otherwise() -> None:
    assert cli_env({})["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "DISABLE_TELEMETRY" not in cli_env({"DISABLE_TELEMETRY": "0"})


def test_only_main_thread_deltas_become_events_named_as_the_reference_names_them() -> None:
    def stream_event(delta: dict[str, str], parent: str | None = None) -> dict[str, Any]:
        return {"type": "stream_event", "parent_tool_use_id": parent,
                "event": {"type": "content_block_delta", "index": 0, "delta": delta}}

    assert delta_event(stream_event({"type": "text_delta", "text": "hi"})) == (
        "text_delta", b'{"delta":"hi"}')
    assert delta_event(stream_event({"type": "thinking_delta", "thinking": "hm"})) == (
        "thinking_delta", b'{"delta":"hm"}')
    assert delta_event(stream_event({"type": "input_json_delta", "partial_json": "{"})) == (
        "input_json_delta", b'{"type":"input_json_delta","partial_json":"{"}')
    assert delta_event(stream_event({"type": "unheard_of_delta", "x": "{"})) is None
    assert delta_event(stream_event({"type": "text_delta", "text": "x"}, "toolu_1")) is None


def test_turn_streams_text_deltas_messages_and_turn_complete(
    client: httpx.Client, sid: str
) -> None:
    events = send_message(client, sid, "hello there")
    assert reply_text(events) == (
        "Turn 1. You said: hello there. This is the start of our conversation.")
    assert [e.event for e in events][-3:] == ["turn_complete", "message", "done"]
    assert events[-2].data["type"] == "result"
    assert events[-1].data["status"] == "ok"
    assistant = [m for m in of_type(events, "message") if m["type"] == "assistant"]
    assert assistant[-1]["message"]["content"] == [{"type": "text", "text": reply_text(events)}]
    complete = of_type(events, "turn_complete")[0]
    assert complete["stop_reason"] == "end_turn"
    assert (complete["numTurns"], complete["result"]) == (1, reply_text(events))
    assert complete["usage"]["output_tokens"] > 0
    assert complete["session_id"] == assistant[-1]["session_id"]


def test_turn_two_sends_turn_one_back_to_the_model(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    send_message(client, sid, "my name is Ada")
    second = send_message(client, sid, "what is my name?")
    calls = agent_calls(stub)
    assert len(calls) == 2
    assert user_prompts(calls[1]["body"]["messages"]) == ["my name is Ada", "what is my name?"]
    sent_back = [m for m in calls[1]["body"]["messages"] if m["role"] == "assistant"]
    assert "Turn 1. You said: my name is Ada." in str(sent_back)
    assert "Earlier you said: my name is Ada." in reply_text(second)


def test_claude_md_is_the_system_prompt_and_the_workspace_the_cwd(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    events = send_message(client, sid, "where are you?")
    assert SYSTEM_PROMPT_MARK in str(agent_calls(stub)[0]["body"]["system"])
    init = next(m for m in of_type(events, "message") if m.get("subtype") == "init")
    assert init["cwd"] == exec_in(client, sid, "pwd")["stdout"].strip()
    assert init["permissionMode"] == "bypassPermissions"


def test_text_deltas_arrive_before_the_turn_ends_in_order(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    stub.set_pacing(token_interval_ms=40)
    arrivals: list[tuple[float, bytes]] = []
    with client.stream("POST", f"/api/sessions/{sid}/messages",
                       json={"content": "stream this reply"}) as response:
        for chunk in response.iter_raw():
            arrivals.append((time.time(), chunk))
    events = parse_sse(chunk for _, chunk in arrivals)
    first_delta_at = next(at for at, chunk in arrivals if b"event: text_delta" in chunk)
    assert first_delta_at < agent_calls(stub)[0]["finished_at"]
    deltas = [e for e in events if e.event == "text_delta"]
    assert [e.id for e in deltas] == sorted(e.id for e in deltas)
    assert reply_text(events) == (
        "Turn 1. You said: stream this reply. This is the start of our conversation.")
    assert deltas[-1].id < next(e.id for e in events if e.event == "turn_complete")


def test_thinking_blocks_stream_as_thinking_deltas(client: httpx.Client, sid: str) -> None:
    events = send_message(client, sid, "THINK about it")
    thinking = "".join(d["delta"] for d in of_type(events, "thinking_delta"))
    assert thinking == "Thinking about turn 1: THINK about it"
    first_text = next(e.id for e in events if e.event == "text_delta")
    assert all(e.id < first_text for e in events if e.event == "thinking_delta")


def test_write_tool_call_creates_the_file_and_streams_tool_events(
    client: httpx.Client, sid: str
) -> None:
    events = send_message(client, sid, "WRITE_FILE notes.txt written by the agent")
    assert exec_in(client, sid, "cat notes.txt")["stdout"] == "written by the agent"
    [tool_use] = of_type(events, "tool_use")
    assert tool_use["name"] == "Write"
    assert tool_use["input"] == {"file_path": "notes.txt", "content": "written by the agent"}
    [tool_result] = of_type(events, "tool_result")
    assert tool_result["tool_use_id"] == tool_use["id"]
    assert tool_result["is_error"] is False
    names = [e.event for e in events]
    assert names.index("tool_use") < names.index("tool_result") < len(names) - 3
    assert "Write returned: File created successfully" in reply_text(events)
    assert events[-1].data["status"] == "ok"


def test_usage_after_a_turn_equals_what_the_stub_reported(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    send_message(client, sid, "WRITE_FILE metered.txt two model calls")
    reported = [call["usage"] for call in agent_calls(stub)]
    assert len(reported) == 2  # the tool call, then the reply after its result
    response = client.get("/api/usage/stats", params={"sessionId": sid})
    assert response.status_code == 200, response.text
    stats = response.json()["stats"]
    for field, name in (("totalInputTokens", "input_tokens"),
                        ("totalOutputTokens", "output_tokens"),
                        ("totalCacheCreationTokens", "cache_creation_input_tokens"),
                        ("totalCacheReadTokens", "cache_read_input_tokens")):
        assert stats[field] == sum(usage[name] for usage in reported), field
    assert stats["totalInputTokens"] > 0 and stats["totalOutputTokens"] > 0
    assert (stats["totalToolCalls"], stats["totalMessages"]) == (1, 1)
    assert stats["totalComputeSeconds"] > 0


def test_bash_tool_call_runs_in_the_workspace(client: httpx.Client, sid: str) -> None:
    events = send_message(client, sid, "RUN_BASH echo from-bash > bash.txt && cat bash.txt")
    [tool_use] = of_type(events, "tool_use")
    assert tool_use["name"] == "Bash"
    assert "from-bash" in str(of_type(events, "tool_result")[0]["content"])
    assert exec_in(client, sid, "cat bash.txt")["stdout"] == "from-bash\n"


def test_cold_resume_continues_the_same_sdk_conversation(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    first = send_message(client, sid, "remember the word kiwi")
    sdk_session = of_type(first, "turn_complete")[0]["session_id"]
    assert client.post(f"/api/sessions/{sid}/pause").json()["session"]["status"] == "paused"
    before = bridge_pids(sid)
    kill_bridge(sid)
    resumed = client.post(f"/api/sessions/{sid}/resume")
    assert resumed.status_code == 200, resumed.text
    assert bridge_pids(sid) not in ([], before)

    after = send_message(client, sid, "which word?")
    assert of_type(after, "turn_complete")[0]["session_id"] == sdk_session
    assert user_prompts(agent_calls(stub)[-1]["body"]["messages"]) == [
        "remember the word kiwi", "which word?"]
    assert "Earlier you said: remember the word kiwi." in reply_text(after)


def interrupted_turn(client: httpx.Client, sid: str, content: str, seen: bytes
                     ) -> list[SseEvent]:
    """Send `content`, interrupt once the stream has shown `seen`, read the turn to its end."""
    with client.stream("POST", f"/api/sessions/{sid}/messages",
                       json={"content": content}) as response:
        chunks = response.iter_raw()
        head = next(chunks)
        while seen not in head:
            head += next(chunks)
        assert client.post(f"/api/sessions/{sid}/interrupt").status_code == 200
        return parse_sse([head, *chunks])


def test_interrupt_mid_turn_ends_the_turn_and_the_session_stays_usable(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    stub.set_pacing(token_interval_ms=250)
    events = interrupted_turn(client, sid, "a slow reply please", b"event: text_delta")
    assert events[-1].data["status"] == "interrupted"
    assert of_type(events, "turn_complete")[0]["stop_reason"] == "interrupted"
    assert "conversation." not in reply_text(events)
    assert agent_calls(stub)[0]["disconnected"] is True

    stub.set_pacing(token_interval_ms=0)
    after = send_message(client, sid, "are you still there?")
    assert after[-1].data["status"] == "ok"
    assert "Earlier you said: a slow reply please." in reply_text(after)


def test_interrupt_right_after_sending_stops_that_turn(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    stub.set_pacing(first_token_delay_ms=500)
    events = interrupted_turn(client, sid, "never mind", b"")
    assert events[-1].data["status"] == "interrupted"
    assert reply_text(events) == ""


def test_ending_the_session_stops_its_cli(client: httpx.Client, sid: str) -> None:
    send_message(client, sid, "hello")
    assert len(bridge_pids(sid)) == 4  # bubblewrap's two, the bridge and its CLI
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert bridge_pids(sid) == []


def test_model_option_picks_the_model_for_that_message(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    send_message(client, sid, "default model")
    send_message(client, sid, "other model", options={"model": "claude-stub-other"})
    send_message(client, sid, "default again")
    models = [r["body"]["model"] for r in agent_calls(stub)]
    assert models[1] == "claude-stub-other"
    assert models[0] == models[2] != "claude-stub-other"


PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
           "RU5ErkJggg==")


def test_content_blocks_reach_the_model_as_the_user_message(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    blocks = [{"type": "text", "text": "what is in this picture?"},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                           "data": PNG_1X1}}]
    events = send_message(client, sid, blocks)
    assert of_type(events, "done")
    [call] = agent_calls(stub)
    last_user = [m for m in call["body"]["messages"] if m["role"] == "user"][-1]
    sent = last_user["content"]
    assert {"type": "text", "text": "what is in this picture?"} in [
        {"type": b["type"], "text": b.get("text")} for b in sent if b["type"] == "text"]
    [image] = [b for b in sent if b["type"] == "image"]
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": PNG_1X1}


def test_max_turns_option_stops_the_agent_loop(
    client: httpx.Client, sid: str, stub: StubProcess
) -> None:
    events = send_message(client, sid, "WRITE_FILE capped.txt one model call only",
                          options={"maxTurns": 1})
    assert of_type(events, "turn_complete")[0]["stop_reason"] == "max_turns"
    assert events[-1].data["status"] == "ok"
    names = [e.event for e in events]
    assert "text_delta" not in names[names.index("tool_result"):]
    assert exec_in(client, sid, "cat capped.txt")["stdout"] == "one model call only"


def failing_session(client: httpx.Client, root: Path, stub: StubProcess) -> str:
    agent = claude_agent(client, root, stub, "fragile", **FAILING_MODEL_ENV)
    return create_session(client, agent)["id"]


def assert_failed_turn(events: list[SseEvent]) -> dict[str, Any]:
    assert [e.event for e in events][-4:] == ["error", "turn_complete", "message", "done"]
    assert events[-2].data["type"] == "result" and events[-2].data["is_error"] is True
    assert events[-1].data["status"] == "error"
    assert of_type(events, "turn_complete")[0]["is_error"] is True
    return of_type(events, "error")[0]


@pytest.mark.parametrize(("failure", "says"), [
    ({"kind": "status", "status": 500}, "500"),
    ({"kind": "drop", "after_tokens": 2}, "connection"),
    ({"kind": "slow_first_byte", "delay_ms": 60_000}, "timed out"),
], ids=["http-500", "dropped-connection", "slow-first-byte"])
def test_model_failure_becomes_an_error_event(
    client: httpx.Client, tmp_path: Path, stub: StubProcess, failure: dict[str, Any], says: str
) -> None:
    sid = failing_session(client, tmp_path, stub)
    stub.inject(**failure, times=0)
    error = assert_failed_turn(send_message(client, sid, "hello?"))
    assert error["code"] == "model_error"
    assert says in error["error"].lower()


def test_session_works_again_once_the_model_recovers(
    client: httpx.Client, tmp_path: Path, stub: StubProcess
) -> None:
    sid = failing_session(client, tmp_path, stub)
    stub.inject("status", status=500, times=0)
    send_message(client, sid, "first try")
    stub.clear_failures()
    events = send_message(client, sid, "second try")
    assert events[-1].data["status"] == "ok"
    assert "You said: second try." in reply_text(events)


def test_agent_without_model_credentials_is_refused_at_session_create(tmp_path: Path) -> None:
    keyless = GatewayProcess(tmp_path / "keyless-data").start()
    try:
        with make_client(keyless) as client:
            deploy(client, "keyless",
                   make_agent_folder(tmp_path, "keyless", {"backend": "claude"}))
            response = client.post("/api/sessions", json={"agent": "keyless"})
    finally:
        keyless.stop()
    assert response.status_code == 503
    assert "model credentials" in response.json()["error"]
