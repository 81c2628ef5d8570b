"""Helpers shared by the runner tests: agent folders and reading turn events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson

from runner.backend import AgentSpec
from wire import events
from wire.events import Event

SYSTEM_PROMPT = "# Tester\nYou are a test agent.\n"


def make_agent(
    root: Path,
    name: str = "tester",
    config: dict[str, Any] | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> AgentSpec:
    """An agent folder (CLAUDE.md + agent.json) under `root`, and its spec."""
    config = config or {}
    folder = root / "agents" / name
    folder.mkdir(parents=True)
    (folder / "CLAUDE.md").write_text(system_prompt)
    (folder / "agent.json").write_text(json.dumps(config))
    return AgentSpec(name=name, path=str(folder), config=config)


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def payload(event: Event) -> Any:
    return orjson.loads(event.data)


def types(turn: Iterable[Event]) -> list[str]:
    return [event.type for event in turn]


def first_of(turn: Iterable[Event], event_type: str) -> Any:
    """The payload of the turn's first event of `event_type`."""
    return next(payload(e) for e in turn if e.type == event_type)


def streamed_text(turn: Iterable[Event]) -> str:
    return "".join(payload(e)["delta"] for e in turn if e.type == events.TEXT_DELTA)


def message_text(turn: Iterable[Event]) -> str:
    """The text blocks of the turn's SDK assistant messages (`message.content`), joined."""
    return "".join(
        block["text"]
        for e in turn if e.type == events.MESSAGE
        for message in [payload(e)] if message["type"] == "assistant"
        for block in message["message"]["content"] if block["type"] == "text")
