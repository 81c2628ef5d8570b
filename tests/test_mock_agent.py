"""The deterministic mock agent, in-process: chunking, replies, memory, tools, interrupts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from runner.bridge.agent import AgentContext
from runner.bridge.mock_agent import (
    CONVERSATION_FILE,
    MockAgent,
    MockTiming,
    compose_reply,
    resolve_timing,
    run_command,
    split_reply,
)
from tests.runner_fixtures import first_of, message_text, payload, streamed_text, types
from wire.events import MESSAGE, TEXT_DELTA, TOOL_RESULT, TOOL_USE, TURN_COMPLETE, Event
from wire.options import MAX_DELAY_MS, MAX_TOKENS

REPLY = "Turn 2. You said: hello there. Earlier you said: first | second."


class Recorder:
    """An `emit` that keeps every event and calls `on_event` (if set) after each."""

    def __init__(self, on_event: Callable[[Event], None] | None = None) -> None:
        self.events: list[Event] = []
        self.on_event = on_event

    async def __call__(self, event_type: str, data: bytes) -> None:
        self.events.append(Event(event_type, data))
        if self.on_event is not None:
            self.on_event(self.events[-1])


def make_context(tmp_path: Path, config: dict[str, Any] | None = None) -> AgentContext:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return AgentContext(
        agent_dir=tmp_path, home=home, system_prompt="You are a test agent.", config=config or {}
    )


async def turn(agent: MockAgent, prompt: str, **options: Any) -> tuple[str, list[Event]]:
    recorder = Recorder()
    status = await agent.run_turn(prompt, options, recorder)
    return status, recorder.events


def test_reply_splits_into_one_chunk_per_word_by_default() -> None:
    chunks = split_reply(REPLY, None)
    assert "".join(chunks) == REPLY
    assert len(chunks) == len(REPLY.split())


@pytest.mark.parametrize("count", [1, 2, 3, 5, 11])
def test_reply_splits_into_exactly_the_requested_chunks(count: int) -> None:
    chunks = split_reply(REPLY, count)
    assert len(chunks) == count
    assert all(chunks)
    assert "".join(chunks) == REPLY


def test_more_chunks_than_words_pads_the_reply_with_filler_words() -> None:
    words = len(REPLY.split())
    chunks = split_reply(REPLY, words + 5)
    assert len(chunks) == words + 5
    joined = "".join(chunks)
    assert joined.startswith(REPLY)
    assert len(joined.split()) == words + 5


def test_chunks_keep_newlines_and_leading_whitespace() -> None:
    text = "  line one\n\nline two\n"
    assert "".join(split_reply(text, None)) == text
    assert "".join(split_reply(text, 2)) == text


def test_first_reply_announces_the_start_of_the_conversation() -> None:
    assert compose_reply("hi", []) == "Turn 1. You said: hi. This is the start of our conversation."


def test_later_reply_quotes_every_earlier_prompt() -> None:
    assert compose_reply("three", ["one", "two"]) == (
        "Turn 3. You said: three. Earlier you said: one | two."
    )


def test_timing_comes_from_options_then_agent_config_then_env() -> None:
    options = {"tokens": 3}
    config = {"mock": {"tokens": 9, "token_interval_ms": 20}}
    environ = {"ASH_MOCK_TOKENS": "7", "ASH_MOCK_TOKEN_INTERVAL_MS": "5",
               "ASH_MOCK_FIRST_TOKEN_MS": "40"}
    assert resolve_timing(options, config, environ) == MockTiming(40.0, 20.0, 3)


def test_timing_defaults_to_no_delay_and_one_token_per_word() -> None:
    assert resolve_timing({}, {}, {}) == MockTiming(0.0, 0.0, None)


def test_invalid_timing_values_fall_through_to_the_next_source() -> None:
    options = {"tokens": 0, "tokenIntervalMs": -1, "firstTokenDelayMs": True}
    config = {"mock": {"tokens": "lots"}}
    assert resolve_timing(options, config, {"ASH_MOCK_TOKENS": "4"}) == MockTiming(0.0, 0.0, 4)


async def test_turn_streams_deltas_then_message_then_turn_complete(tmp_path: Path) -> None:
    status, events = await turn(MockAgent(make_context(tmp_path)), "hello", tokens=4)
    assert status == "ok"
    assert types(events) == [TEXT_DELTA] * 4 + [MESSAGE, TURN_COMPLETE, MESSAGE]
    message = first_of(events, MESSAGE)
    assert message["type"] == "assistant" and message["message"]["role"] == "assistant"
    assert message["message"]["model"] == "ash-mock"
    assert message_text(events) == streamed_text(events)
    complete = first_of(events, TURN_COMPLETE)
    assert complete["numTurns"] == 1 and complete["result"] == streamed_text(events)
    assert complete["turn"] == 1 and complete["stop_reason"] == "end_turn"
    assert complete["usage"]["output_tokens"] == 4
    result = payload(events[-1])
    assert result["type"] == "result" and result["subtype"] == "success"
    assert result["result"] == streamed_text(events) and result["num_turns"] == 1


async def test_turn_without_partial_messages_sends_the_text_in_messages_only(
        tmp_path: Path) -> None:
    status, events = await turn(MockAgent(make_context(tmp_path)), "hello", tokens=4,
                                includePartialMessages=False)
    assert status == "ok"
    assert types(events) == [MESSAGE, TURN_COMPLETE, MESSAGE]
    assert message_text(events) == first_of(events, TURN_COMPLETE)["result"] != ""


async def test_agent_remembers_earlier_prompts_within_a_conversation(tmp_path: Path) -> None:
    agent = MockAgent(make_context(tmp_path))
    await turn(agent, "my name is Ada")
    _, second = await turn(agent, "what is my name?")
    assert message_text(second) == (
        "Turn 2. You said: what is my name?. Earlier you said: my name is Ada."
    )


async def test_a_new_agent_on_the_same_home_resumes_the_conversation(tmp_path: Path) -> None:
    await turn(MockAgent(make_context(tmp_path)), "remember apples")
    _, resumed = await turn(MockAgent(make_context(tmp_path)), "what fruit?")
    assert "Earlier you said: remember apples." in message_text(resumed)


async def test_conversation_is_saved_before_the_turn_completes(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    saved_at_completion: list[Any] = []

    def on_event(event: Event) -> None:
        if event.type == TURN_COMPLETE:
            saved_at_completion.append(
                orjson.loads((context.home / CONVERSATION_FILE).read_bytes())
            )

    await MockAgent(context).run_turn("persist me", {}, Recorder(on_event))
    assert saved_at_completion[0][0] == {"role": "user", "content": "persist me"}
    assert saved_at_completion[0][1]["role"] == "assistant"


async def test_interrupt_stops_the_stream_and_reports_interrupted(tmp_path: Path) -> None:
    agent = MockAgent(make_context(tmp_path))
    deltas = 0

    def on_event(event: Event) -> None:
        nonlocal deltas
        deltas += event.type == TEXT_DELTA
        if deltas == 2:
            agent.interrupt()

    recorder = Recorder(on_event)
    started = time.monotonic()
    status = await agent.run_turn("a b c d e f g h", {"tokenIntervalMs": 100}, recorder)
    assert status == "interrupted"
    assert time.monotonic() - started < 0.5
    assert types(recorder.events).count(TEXT_DELTA) == 2
    assert first_of(recorder.events, TURN_COMPLETE)["stop_reason"] == "interrupted"
    assert message_text(recorder.events) == streamed_text(recorder.events)


async def test_interrupt_does_not_outlive_its_turn(tmp_path: Path) -> None:
    agent = MockAgent(make_context(tmp_path))
    agent.interrupt()
    first_status, _ = await turn(agent, "interrupted before it began")
    second_status, _ = await turn(agent, "runs normally")
    assert (first_status, second_status) == ("interrupted", "ok")


async def test_bash_prompt_runs_the_command_in_home_as_a_tool_call(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    status, events = await turn(MockAgent(context), "/bash pwd && echo hi")
    assert status == "ok"
    assert types(events)[:4] == [TOOL_USE, MESSAGE, TOOL_RESULT, MESSAGE]
    tool_use = payload(events[0])
    assert tool_use == {"id": "toolu_1", "name": "Bash", "input": {"command": "pwd && echo hi"}}
    assert payload(events[1])["message"]["content"] == [{"type": "tool_use", **tool_use}]
    result = payload(events[2])
    assert result == {"tool_use_id": "toolu_1", "content": f"{context.home}\nhi\n",
                      "exit_code": 0, "is_error": False}
    assert "exited with code 0" in message_text(events)
    assert f"{context.home}\nhi" in message_text(events)


async def test_bash_failure_is_a_tool_error_with_its_exit_code(tmp_path: Path) -> None:
    _, events = await turn(MockAgent(make_context(tmp_path)), "/bash echo oops >&2; exit 3")
    result = first_of(events, TOOL_RESULT)
    assert (result["exit_code"], result["is_error"], result["content"]) == (3, True, "oops\n")
    assert "exited with code 3" in message_text(events)


async def test_command_output_is_capped(tmp_path: Path) -> None:
    result = await run_command("head -c 100000 /dev/zero | tr '\\0' y", tmp_path,
                               asyncio.Event(), cap=1000)
    assert result.output.startswith("y" * 1000 + "\n[output truncated at 1000 bytes]")
    assert result.exit_code == 0


async def test_command_is_killed_at_its_time_limit(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await run_command("sleep 30", tmp_path, asyncio.Event(), time_limit=0.2)
    assert time.monotonic() - started < 5
    assert "[timed out after 0.2 s]" in result.output
    assert result.exit_code != 0


async def test_interrupt_kills_a_running_command(tmp_path: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    result = await run_command("echo started; sleep 30", tmp_path, stop)
    assert result.output == "started\n\n[interrupted]"
    assert result.exit_code != 0


def test_pacing_options_beyond_their_bounds_are_clamped_in_the_sandbox() -> None:
    """The sandbox side trusts no gateway: `1e300` ms must not pin the session."""
    options = {"firstTokenDelayMs": 1e300, "tokenIntervalMs": "1e300", "tokens": 10**12}
    assert resolve_timing(options, {}, {}) == MockTiming(MAX_DELAY_MS, MAX_DELAY_MS, MAX_TOKENS)


def test_a_token_count_of_thousands_of_digits_falls_through_instead_of_raising() -> None:
    huge = "9" * 5000  # int() refuses more than 4,300 digits with a ValueError
    assert resolve_timing({"tokens": huge}, {}, {"ASH_MOCK_TOKENS": "4"}).tokens == 4
