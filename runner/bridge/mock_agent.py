"""The deterministic mock agent: the default backend, for tests, demos and benchmarks.

Replies are derived from the prompt and from every earlier prompt, so a test can
tell the agent remembers. The conversation lives in
`$HOME/.ash/mock/conversation.json`, written after each turn and before its
`done`, which is what a cold resume restores. A prompt `/bash <command>` runs
the command in the workspace and reports it as a Bash tool call.

Its stream has the reference's shapes (docs/compat.md): `text_delta {delta}` per chunk
(unless the message sets `includePartialMessages: false`), a `message` frame per SDK
message in the Claude Agent SDK's shape (assistant, user tool result, result), and
`turn_complete {numTurns, result, ...}` before the `result` message.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from runner.bridge.agent import AgentContext, Emit
from runner.bridge.shell import run_shell
from wire import events
from wire.options import MAX_DELAY_MS, MAX_TOKENS

MODEL = "ash-mock"
BASH_PREFIX = "/bash "
BASH_TIMEOUT_S = 60.0
BASH_OUTPUT_CAP = 64 * 1024
CONVERSATION_FILE = Path(".ash") / "mock" / "conversation.json"
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
_WORD = re.compile(r"\s*\S+\s*")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class MockTiming:
    first_token_delay_ms: float = 0.0
    token_interval_ms: float = 0.0
    tokens: int | None = None
    """How many chunks (`text_delta` events) a reply is split into; None means one per word."""


def _ms(value: object) -> float | None:
    """A pause in ms, clamped to MAX_DELAY_MS: the gateway checks it, but the sandbox
    trusts no one (`1e300` would pin the session)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return min(float(value), MAX_DELAY_MS)
    return None


def _count(value: object) -> int | None:
    """A token count, clamped to MAX_TOKENS; a string must be ASCII digits (at most 19:
    `int()` of a longer one raises past 4,300 digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        digits = value.strip()
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
            return None
        value = int(digits)
    if isinstance(value, int) and value >= 1:
        return min(value, MAX_TOKENS)
    return None


def _first(parse: Callable[[object], _T | None], *candidates: object) -> _T | None:
    for candidate in candidates:
        parsed = parse(candidate)
        if parsed is not None:
            return parsed
    return None


def resolve_timing(
    options: Mapping[str, Any], config: Mapping[str, Any], environ: Mapping[str, str]
) -> MockTiming:
    """Each setting from the message options, else agent.json `mock`, else ASH_MOCK_*."""
    mock = config.get("mock")
    mock = mock if isinstance(mock, dict) else {}
    first = _first(
        _ms,
        options.get("firstTokenDelayMs"),
        mock.get("first_token_delay_ms"),
        environ.get("ASH_MOCK_FIRST_TOKEN_MS"),
    )
    interval = _first(
        _ms,
        options.get("tokenIntervalMs"),
        mock.get("token_interval_ms"),
        environ.get("ASH_MOCK_TOKEN_INTERVAL_MS"),
    )
    tokens = _first(
        _count, options.get("tokens"), mock.get("tokens"), environ.get("ASH_MOCK_TOKENS")
    )
    return MockTiming(first or 0.0, interval or 0.0, tokens)


def compose_reply(prompt: str, earlier: Sequence[str]) -> str:
    """The reply to `prompt` given the user's earlier prompts, oldest first."""
    turn = len(earlier) + 1
    if not earlier:
        return f"Turn 1. You said: {prompt}. This is the start of our conversation."
    return f"Turn {turn}. You said: {prompt}. Earlier you said: {' | '.join(earlier)}."


def split_reply(text: str, tokens: int | None) -> list[str]:
    """Split `text` into `tokens` chunks (one per word when None).

    Words are grouped when there are fewer chunks than words, and filler words are
    appended when there are more, so the chunks always join to the reply sent.
    """
    words = _WORD.findall(text) or [text]
    if tokens is None or tokens == len(words):
        return words
    if tokens > len(words):
        padding = [f" {FILLER[i % len(FILLER)]}" for i in range(tokens - len(words))]
        return words + padding
    size, extra = divmod(len(words), tokens)
    chunks: list[str] = []
    start = 0
    for index in range(tokens):
        end = start + size + (1 if index < extra else 0)
        chunks.append("".join(words[start:end]))
        start = end
    return chunks


@dataclass(frozen=True, slots=True)
class CommandResult:
    output: str
    exit_code: int


async def run_command(
    command: str,
    cwd: Path,
    stop: asyncio.Event,
    *,
    time_limit: float = BASH_TIMEOUT_S,
    cap: int = BASH_OUTPUT_CAP,
) -> CommandResult:
    """The Bash tool: stdout and stderr as one text, with notes on truncation and kills."""
    result = await run_shell(command, cwd, time_limit=time_limit, cap=cap, stop=stop,
                             merge_stderr=True)
    text = result.stdout.decode("utf-8", "replace")
    if result.truncated:
        text += f"\n[output truncated at {cap} bytes]"
    if result.stopped:
        text += "\n[interrupted]"
    elif result.timed_out:
        text += f"\n[timed out after {time_limit:g} s]"
    return CommandResult(text, result.exit_code)


def load_conversation(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        messages = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"ash-bridge: ignoring unreadable {path}: {exc}", file=sys.stderr)
        return []
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        print(f"ash-bridge: ignoring malformed {path}", file=sys.stderr)
        return []
    return messages


def save_conversation(path: Path, messages: list[dict[str, str]]) -> None:
    """Replace the file atomically, so a kill mid-write leaves the previous turn intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(orjson.dumps(messages))
    os.replace(temp, path)


class MockAgent:
    def __init__(self, context: AgentContext) -> None:
        self._context = context
        self._path = context.home / CONVERSATION_FILE
        self._messages = load_conversation(self._path)
        self._interrupted = asyncio.Event()

    def interrupt(self) -> None:
        self._interrupted.set()

    async def run_turn(self, prompt: str, options: dict[str, Any], emit: Emit) -> str:
        try:
            return await self._run_turn(prompt, options, emit)
        finally:
            self._interrupted.clear()

    async def _run_turn(self, prompt: str, options: dict[str, Any], emit: Emit) -> str:
        started = time.monotonic()
        timing = resolve_timing(options, self._context.config, self._context.environ)
        partials = options.get(events.INCLUDE_PARTIAL_MESSAGES) is not False
        earlier = [m["content"] for m in self._messages if m["role"] == "user"]
        turn = len(earlier) + 1
        interrupted = await self._pause(timing.first_token_delay_ms)
        command = prompt[len(BASH_PREFIX) :].strip() if prompt.startswith(BASH_PREFIX) else ""
        if command and not interrupted:
            reply = await self._bash(turn, command, emit)
            interrupted = self._interrupted.is_set()
        else:
            reply = compose_reply(prompt, earlier)
        sent: list[str] = []
        for index, chunk in enumerate(split_reply(reply, timing.tokens)):
            if interrupted or (index and await self._pause(timing.token_interval_ms)):
                interrupted = True
                break
            if partials:
                await emit(events.TEXT_DELTA, orjson.dumps({"delta": chunk}))
            sent.append(chunk)
        text = "".join(sent)
        input_tokens = sum(len(m["content"].split()) for m in self._messages)
        input_tokens += len(self._context.system_prompt.split()) + len(prompt.split())
        usage = {"input_tokens": input_tokens, "output_tokens": len(sent)}
        stop_reason = "interrupted" if interrupted else "end_turn"
        if text:
            await emit(events.MESSAGE, orjson.dumps(self._sdk_assistant(
                turn, [{"type": "text", "text": text}], stop_reason, usage)))
        self._messages += [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": text},
        ]
        save_conversation(self._path, self._messages)
        await emit(events.TURN_COMPLETE, orjson.dumps({
            "numTurns": 1,
            "result": text,
            "turn": turn,
            "stop_reason": stop_reason,
            "usage": usage,
        }))
        await emit(events.MESSAGE, orjson.dumps({
            "type": "result",
            "subtype": "error_during_execution" if interrupted else "success",
            "is_error": interrupted,
            "duration_ms": round((time.monotonic() - started) * 1000),
            "duration_api_ms": 0,
            "num_turns": 1,
            "result": text,
            "stop_reason": stop_reason,
            "session_id": self._session_id,
            "total_cost_usd": 0,
            "usage": usage,
        }))
        return "interrupted" if interrupted else "ok"

    @property
    def _session_id(self) -> str:
        return self._context.environ.get("ASH_SESSION_ID", "")

    def _sdk_assistant(self, turn: int, content: list[dict[str, Any]], stop_reason: str,
                       usage: dict[str, int]) -> dict[str, Any]:
        """An assistant message as the Claude Agent SDK streams it (content under `message`)."""
        return {
            "type": "assistant",
            "message": {
                "id": f"msg_mock_{turn}_{content[0]['type']}",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": content,
                "stop_reason": stop_reason,
                "usage": usage,
            },
            "parent_tool_use_id": None,
            "session_id": self._session_id,
        }

    async def _bash(self, turn: int, command: str, emit: Emit) -> str:
        """The tool call in the reference's order: `tool_use`, then its SDK message; the
        result likewise (`tool_result`, then the SDK user message carrying it)."""
        tool_id = f"toolu_{turn}"
        tool_input = {"command": command}
        await emit(events.TOOL_USE, orjson.dumps(
            {"id": tool_id, "name": "Bash", "input": tool_input}))
        await emit(events.MESSAGE, orjson.dumps(self._sdk_assistant(
            turn, [{"type": "tool_use", "id": tool_id, "name": "Bash", "input": tool_input}],
            "tool_use", {"input_tokens": 0, "output_tokens": 0})))
        result = await run_command(command, self._context.home, self._interrupted)
        is_error = result.exit_code != 0
        await emit(events.TOOL_RESULT, orjson.dumps({
            "tool_use_id": tool_id,
            "content": result.output,
            "exit_code": result.exit_code,
            "is_error": is_error,
        }))
        await emit(events.MESSAGE, orjson.dumps({
            "type": "user",
            "message": {"role": "user", "content": [{
                "type": "tool_result", "tool_use_id": tool_id, "content": result.output,
                "is_error": is_error}]},
            "parent_tool_use_id": None,
            "session_id": self._session_id,
            "tool_use_result": {"stdout": result.output, "stderr": "", "interrupted": False},
        }))
        return (
            f"Turn {turn}. I ran `{command}` and it exited with code {result.exit_code}. "
            f"Output:\n{result.output}"
        )

    async def _pause(self, ms: float) -> bool:
        """Wait `ms` milliseconds unless interrupted first; True when interrupted."""
        if ms > 0 and not self._interrupted.is_set():
            try:
                async with asyncio.timeout(ms / 1000):
                    await self._interrupted.wait()
            except TimeoutError:
                return False
        return self._interrupted.is_set()
