"""The Anthropic Messages API stub: replies, event shapes, recording, pacing and failures.

Reply planning is tested in-process; the protocol through a real `python -m bench.model_stub`
process, the way the CLI talks to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.model_stub import (
    SIGNATURE,
    StubProcess,
    Text,
    Thinking,
    ToolUse,
    plan_reply,
    user_prompts,
)

WRITE_TOOL = {"name": "Write", "input_schema": {"type": "object"}}
BASH_TOOL = {"name": "Bash", "input_schema": {"type": "object"}}


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": t} for t in texts]}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def body(*messages: dict[str, Any], stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 1024, "stream": stream,
            "messages": list(messages), **extra}


# --- replies --------------------------------------------------------------------------


def test_reply_echoes_the_prompt_on_the_first_turn() -> None:
    reply = plan_reply(body(user("hello")))
    assert reply.blocks == (
        Text("Turn 1. You said: hello. This is the start of our conversation."),)
    assert reply.stop_reason == "end_turn"


def test_reply_quotes_every_earlier_prompt() -> None:
    reply = plan_reply(body(user("my name is Ada"), assistant("ok"), user("who am I?")))
    assert reply.blocks == (
        Text("Turn 2. You said: who am I?. Earlier you said: my name is Ada."),)


def test_system_reminders_and_interrupt_markers_are_not_prompts() -> None:
    messages = [user("<system-reminder>\ncontext</system-reminder>", "first"),
                assistant("partial"),
                user("[Request interrupted by user]", "second")]
    assert user_prompts(messages) == ["first", "second"]


def test_write_file_prompt_is_answered_with_a_write_tool_call() -> None:
    reply = plan_reply(body(user("WRITE_FILE notes.txt hello there"), tools=[WRITE_TOOL]))
    assert reply.stop_reason == "tool_use"
    assert reply.blocks[-1] == ToolUse("toolu_stub_0001", "Write",
                                       {"file_path": "notes.txt", "content": "hello there"})


def test_run_bash_prompt_is_answered_with_a_bash_tool_call() -> None:
    reply = plan_reply(body(user("RUN_BASH echo hi > out.txt"), tools=[BASH_TOOL]))
    call = reply.blocks[-1]
    assert isinstance(call, ToolUse)
    assert (call.name, call.input["command"]) == ("Bash", "echo hi > out.txt")


def test_no_tool_call_when_the_request_offers_no_such_tool() -> None:
    reply = plan_reply(body(user("WRITE_FILE notes.txt hello")))
    assert reply.stop_reason == "end_turn"
    assert all(not isinstance(b, ToolUse) for b in reply.blocks)


def test_tool_result_is_answered_with_a_final_text_quoting_it() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "File created"}
    reply = plan_reply(body(user("WRITE_FILE a b"), {"role": "assistant", "content": [call]},
                            {"role": "user", "content": [result]}, tools=[WRITE_TOOL]))
    assert reply.blocks == (Text("Turn 1. Write returned: File created"),)
    assert reply.stop_reason == "end_turn"


def test_think_prompt_puts_a_thinking_block_first() -> None:
    reply = plan_reply(body(user("THINK hard")))
    assert reply.blocks[0] == Thinking("Thinking about turn 1: THINK hard")
    assert isinstance(reply.blocks[1], Text)


# --- the protocol, through a real stub process ----------------------------------------


@pytest.fixture(scope="module")
def stub_process() -> Iterator[StubProcess]:
    with StubProcess() as stub:
        yield stub


@pytest.fixture
def stub(stub_process: StubProcess) -> Iterator[StubProcess]:
    stub_process.clear_requests()
    stub_process.clear_failures()
    stub_process.set_pacing(first_token_delay_ms=0, token_interval_ms=0)
    yield stub_process


@pytest.fixture
def http(stub: StubProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stub.url, timeout=10,
                      headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"}) as c:
        yield c


def sse_events(client: httpx.Client, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE frame of a streamed Messages response."""
    with client.stream("POST", "/v1/messages", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_port_zero_prints_the_chosen_url(stub: StubProcess) -> None:
    assert stub.url.startswith("http://127.0.0.1:")
    assert int(stub.url.rsplit(":", 1)[1]) > 0


def test_streamed_text_reply_has_the_real_api_event_sequence(http: httpx.Client) -> None:
    found = sse_events(http, body(user("hello"), stream=True))
    names = [name for name, _ in found]
    deltas = names.count("content_block_delta")
    assert names == ["message_start", "content_block_start", "ping",
                     *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in found)
    start = found[0][1]["message"]
    assert (start["role"], start["content"], start["model"]) == ("assistant", [], "claude-test")
    assert start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert found[1][1] == {"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}}
    text = "".join(d["delta"]["text"] for n, d in found if n == "content_block_delta")
    assert text == "Turn 1. You said: hello. This is the start of our conversation."
    assert found[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert found[-2][1]["usage"]["output_tokens"] == deltas


def test_streamed_tool_call_sends_its_input_as_json_deltas(http: httpx.Client) -> None:
    found = sse_events(http, body(user("WRITE_FILE out.txt some words"), stream=True,
                                  tools=[WRITE_TOOL]))
    starts = [d["content_block"] for n, d in found if n == "content_block_start"]
    assert starts[1] == {"type": "tool_use", "id": "toolu_stub_0001", "name": "Write", "input": {}}
    partial = "".join(d["delta"]["partial_json"] for n, d in found
                      if n == "content_block_delta" and d["index"] == 1)
    assert json.loads(partial) == {"file_path": "out.txt", "content": "some words"}
    assert next(d for n, d in found if n == "message_delta")["delta"]["stop_reason"] == "tool_use"


def test_streamed_thinking_block_ends_with_a_signature(http: httpx.Client) -> None:
    found = sse_events(http, body(user("THINK now"), stream=True))
    deltas = [d["delta"] for n, d in found if n == "content_block_delta" and d["index"] == 0]
    assert {d["type"] for d in deltas[:-1]} == {"thinking_delta"}
    assert deltas[-1] == {"type": "signature_delta", "signature": SIGNATURE}


def test_non_streaming_reply_is_one_message(http: httpx.Client) -> None:
    response = http.post("/v1/messages", json=body(user("hi")))
    assert response.status_code == 200
    message = response.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [
        {"type": "text", "text": "Turn 1. You said: hi. This is the start of our conversation."}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] > 0


def test_count_tokens_answers_a_positive_count(http: httpx.Client) -> None:
    response = http.post("/v1/messages/count_tokens", json=body(user("count these words")))
    assert response.status_code == 200
    assert response.json()["input_tokens"] > 0


def test_every_request_is_recorded_with_path_headers_and_body(
    http: httpx.Client, stub: StubProcess
) -> None:
    http.post("/v1/messages", json=body(user("remember me")))
    http.post("/v1/messages/count_tokens", json=body(user("x")))
    recorded = stub.requests(None)
    assert [r["path"] for r in recorded] == ["/v1/messages", "/v1/messages/count_tokens"]
    assert recorded[0]["headers"]["x-api-key"] == "test-key"
    assert recorded[0]["body"]["messages"][0]["content"][0]["text"] == "remember me"
    assert recorded[0]["received_at"] <= recorded[0]["first_token_at"] <= recorded[0]["finished_at"]


def test_clearing_the_record_empties_it(http: httpx.Client, stub: StubProcess) -> None:
    http.post("/v1/messages", json=body(user("x")))
    stub.clear_requests()
    assert stub.requests(None) == []


def test_unknown_path_is_a_recorded_404(http: httpx.Client, stub: StubProcess) -> None:
    response = http.get("/v1/models")
    assert response.status_code == 404
    assert response.json()["type"] == "error"
    assert [r["path"] for r in stub.requests(None)] == ["/v1/models"]


def test_first_token_delay_holds_back_the_first_delta(
    http: httpx.Client, stub: StubProcess
) -> None:
    stub.set_pacing(first_token_delay_ms=300)
    sse_events(http, body(user("wait"), stream=True))
    record = stub.requests()[0]
    assert record["first_token_at"] - record["received_at"] >= 0.3


def test_injected_status_failure_answers_an_api_error(
    http: httpx.Client, stub: StubProcess
) -> None:
    stub.inject("status", status=529)
    response = http.post("/v1/messages", json=body(user("x"), stream=True))
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"
    assert http.post("/v1/messages", json=body(user("x"))).status_code == 200


def test_injected_failure_hits_as_many_requests_as_asked(
    http: httpx.Client, stub: StubProcess
) -> None:
    stub.inject("status", status=500, times=2)
    statuses = [http.post("/v1/messages", json=body(user("x"))).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert [r["failure"] for r in stub.requests()] == ["status", "status", None]


def test_injected_drop_closes_the_connection_mid_stream(
    http: httpx.Client, stub: StubProcess
) -> None:
    stub.inject("drop", after_tokens=2)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", "/v1/messages", json=body(user("x"), stream=True)) as response:
            for chunk in response.iter_raw():
                received += chunk
    assert received.count(b"event: content_block_delta") == 2
    assert b"message_stop" not in received


def test_injected_slow_first_byte_outlasts_a_client_timeout(
    http: httpx.Client, stub: StubProcess
) -> None:
    stub.inject("slow_first_byte", delay_ms=5000)
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/messages", json=body(user("x")), timeout=0.5)
    assert stub.requests()[0]["failure"] == "slow_first_byte"


def test_injected_error_event_ends_the_stream_with_an_error(
    http: httpx.Client, stub: StubProcess
) -> None:
    stub.inject("error_event", after_tokens=1)
    found = sse_events(http, body(user("x"), stream=True))
    assert found[-1] == ("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "stub: injected error"}})


def test_bad_failure_request_is_refused(stub: StubProcess) -> None:
    response = httpx.post(stub.url + "/_stub/failures", json={"kind": "explode"})
    assert response.status_code == 400


def test_pacing_comes_from_flags_and_environment() -> None:
    env = {**os.environ, "ASH_STUB_TOKEN_INTERVAL_MS": "7"}
    with StubProcess(["--first-token-ms", "25"], env=env) as stub:
        assert httpx.get(stub.url + "/_stub/pacing").json() == {
            "first_token_delay_ms": 25.0, "token_interval_ms": 7.0}

