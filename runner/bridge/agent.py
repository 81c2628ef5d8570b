"""The agent interface the bridge drives, and how an agent is loaded from the environment.

An agent backend runs one turn at a time and reports each event through `emit`
as a type name plus JSON bytes it encoded itself. The bridge owns the frame
protocol and the closing `done` event, so a backend never sees the socket.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

SYSTEM_PROMPT_FILE = "CLAUDE.md"
CONFIG_FILE = "agent.json"
DEFAULT_BACKEND = "mock"

Emit = Callable[[str, bytes], Awaitable[None]]
"""Write one event (type name, JSON payload) to the runner; waits while the socket is full."""


class AgentLoadError(Exception):
    """The agent cannot start; the message is written to stderr before exiting."""


@dataclass(frozen=True, slots=True)
class AgentContext:
    """What an agent backend gets at start: its folder, its home and its configuration."""

    agent_dir: Path
    home: Path
    system_prompt: str
    config: dict[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)


class AgentBackend(Protocol):
    async def run_turn(self, prompt: str, options: dict[str, Any], emit: Emit) -> str:
        """Run one turn, emitting its events up to `turn_complete`; returns the `done` status.

        The status is "ok" or "interrupted". Raising ends the turn with an `error` event.
        """
        ...

    def interrupt(self) -> None:
        """Stop the turn that is running or about to run.

        The bridge only calls this while a turn is pending, and the request lapses
        when that turn's `run_turn` returns.
        """
        ...


def load_context(environ: Mapping[str, str]) -> AgentContext:
    """Read the agent folder named by ASH_AGENT_DIR: its system prompt and `agent.json`."""
    raw_dir = environ.get("ASH_AGENT_DIR")
    if not raw_dir:
        raise AgentLoadError("ASH_AGENT_DIR is not set")
    agent_dir = Path(raw_dir)
    if not agent_dir.is_dir():
        raise AgentLoadError(f"agent folder not found: {agent_dir}")
    prompt_path = agent_dir / SYSTEM_PROMPT_FILE
    try:
        system_prompt = prompt_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentLoadError(f"cannot read {prompt_path}: {exc}") from exc
    return AgentContext(
        agent_dir=agent_dir,
        home=Path(environ.get("HOME") or Path.cwd()),
        system_prompt=system_prompt,
        config=_read_config(agent_dir / CONFIG_FILE),
        environ=environ,
    )


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AgentLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise AgentLoadError(f"{path} must hold a JSON object")
    return config


def load_agent(backend: str, environ: Mapping[str, str]) -> AgentBackend:
    """The agent backend named `backend` (ASH_BACKEND), started on the agent folder."""
    if backend == "claude":
        try:
            from runner.bridge.claude_agent import ClaudeAgent
        except ImportError as exc:
            raise AgentLoadError(
                f"the claude backend needs claude-agent-sdk (pip install '.[claude]'): {exc}"
            ) from exc
        return ClaudeAgent(load_context(environ))
    if backend != "mock":
        raise AgentLoadError(f"unknown agent backend {backend!r} (known: mock, claude)")
    from runner.bridge.mock_agent import MockAgent

    return MockAgent(load_context(environ))


BACKEND_MODULES = {"mock": "runner.bridge.mock_agent", "claude": "runner.bridge.claude_agent"}


def preload_backend(backend: str) -> None:
    """Import a backend's code ahead of `load_agent` (a warm-pool bridge does, before its
    session exists). A module that fails to import is left for `load_agent` to report."""
    module = BACKEND_MODULES.get(backend)
    if module is not None:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


async def start_agent(agent: AgentBackend) -> None:
    """Finish starting a backend that does more than its constructor (the Claude backend
    starts its CLI here); the bridge sends `ready` after this. Raises AgentLoadError."""
    start = getattr(agent, "start", None)
    if start is not None:
        await start()


async def close_agent(agent: AgentBackend) -> None:
    """Let a backend stop what it started (the Claude backend's CLI) before the bridge exits."""
    close = getattr(agent, "close", None)
    if close is not None:
        await close()
