"""The Claude backend: the real Claude Agent SDK, driving the `claude` CLI its wheel bundles.

One `ClaudeSDKClient` — one CLI process — lives as long as the bridge. It connects when
the bridge starts, before `ready`, so a turn costs the model's first token plus
milliseconds instead of a CLI start. The agent's CLAUDE.md is the system prompt, the
workspace (HOME) is the working directory, and tools run without asking: the sandbox
is the boundary.

The CLI keeps the conversation in HOME (`~/.claude/projects/...`), which travels with
the session's state; the SDK session id is kept beside it in `~/.ash/claude/session.json`,
so a bridge started on restored state resumes the same conversation.

A session's own options (`wire.session_config`: system prompt, model, tools, MCP servers,
subagents, ...) and a message's model settings (budget, effort, thinking, output format)
become the CLI's options: the CLI starts with the session's (`ASH_SESSION_CONFIG`), and a
turn that needs other ones restarts it on the same conversation (`launch_options`).

Model endpoint and key: `ASH_MODEL_BASE_URL` / `ASH_MODEL_API_KEY` when the runner sets
them (the model proxy's relay and session token, `runner.bridge.model_relay`), else
`ANTHROPIC_BASE_URL` / `ANTHROPIC_API_KEY` from the agent's `env` — the CLI reads both
from its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from claude_agent_sdk import (
    AgentDefinition,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    CLIConnectionError,
)

from runner.bridge.agent import SYSTEM_PROMPT_FILE, AgentContext, AgentLoadError, Emit
from wire import events
from wire.content import CONTENT_BLOCKS_OPTION
from wire.options import (
    EFFORTS,
    MAX_AGENT_TURNS,
    MAX_BUDGET_USD,
    MAX_THINKING_BUDGET,
    MIN_THINKING_BUDGET,
)
from wire.session_config import (
    SESSION_CONFIG_ENV,
    SESSION_CONFIG_OPTION,
    ConfigError,
    check_config,
)

SESSION_FILE = Path(".ash") / "claude" / "session.json"
LAUNCH_DIR = Path(".ash") / "claude" / "launch"
"""The session's system prompt and MCP servers, as files the CLI reads (no argv limits)."""
DEFAULT_THINKING_BUDGET = 10_000
"""Thinking tokens for `thinking: {type: enabled}` without `budgetTokens`."""
PERMISSION_MODES = frozenset({"default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"})
DEFAULT_CONNECT_TIMEOUT = 60.0
CLOSE_TIMEOUT = 3.0

QUIET_CLI_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "IS_SANDBOX": "1",
}
"""No update checks, telemetry or other traffic besides model calls; IS_SANDBOX lets the
CLI skip permission prompts when the sandbox's user is root. The agent's env may override."""

CREDENTIAL_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                   "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX")


class ClaudeAgentError(Exception):
    """The CLI failed in a way that ends the turn; the bridge reports it as an `error` event."""


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        digits = value.strip()
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
            return None
        value = int(digits)
    return value if isinstance(value, int) and value > 0 else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class ClaudeSettings:
    """The agent's `claude` section of agent.json, checked."""

    model: str | None = None
    max_turns: int | None = None
    permission_mode: str = "bypassPermissions"
    cli_path: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @classmethod
    def resolve(cls, config: Mapping[str, Any], environ: Mapping[str, str]) -> ClaudeSettings:
        """`{"claude": {"model", "maxTurns", "permissionMode"}}`; ASH_CLAUDE_CLI names a CLI."""
        claude = config.get("claude") or {}
        if not isinstance(claude, dict):
            raise AgentLoadError("agent config `claude` must be an object")
        mode = claude.get("permissionMode", "bypassPermissions")
        if mode not in PERMISSION_MODES:
            raise AgentLoadError(f"claude.permissionMode must be one of {sorted(PERMISSION_MODES)}")
        max_turns = claude.get("maxTurns")
        if max_turns is not None and _positive_int(max_turns) is None:
            raise AgentLoadError("claude.maxTurns must be a positive integer")
        return cls(model=_text(claude.get("model")), max_turns=_positive_int(max_turns),
                   permission_mode=mode, cli_path=_text(environ.get("ASH_CLAUDE_CLI")))


def cli_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What the CLI gets on top of the bridge's environment (which it inherits)."""
    env = {name: value for name, value in QUIET_CLI_ENV.items() if name not in environ}
    if base_url := environ.get("ASH_MODEL_BASE_URL"):
        env["ANTHROPIC_BASE_URL"] = base_url
    if api_key := environ.get("ASH_MODEL_API_KEY"):
        env["ANTHROPIC_API_KEY"] = api_key
    return env


def has_credentials(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in ("ASH_MODEL_API_KEY", *CREDENTIAL_VARS))


def launch_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """What the CLI must be started with for this turn, beyond the agent's settings: the
    session's config (`wire.session_config`, checked again here) but its model, and the
    message's model settings (`maxBudgetUsd`, `effort`, `thinking`, `outputFormat`). A
    turn whose launch options differ from the running CLI's restarts it on the same
    conversation; the model changes without a restart."""
    session = options.get(SESSION_CONFIG_OPTION) or {}
    try:
        launch = dict(check_config(session))
    except ConfigError as exc:
        raise ClaudeAgentError(f"session config refused: {exc}") from None
    launch.pop("model", None)
    launch.pop("extraEnv", None)
    budget = options.get("maxBudgetUsd")
    if (isinstance(budget, int | float) and not isinstance(budget, bool)
            and 0 < budget <= MAX_BUDGET_USD):
        launch["maxBudgetUsd"] = float(budget)
    if options.get("effort") in EFFORTS:
        launch["effort"] = options["effort"]
    if (thinking := _thinking(options.get("thinking"))) is not None:
        launch["thinking"] = thinking
    output = options.get("outputFormat")
    if (isinstance(output, dict) and output.get("type") == "json_schema"
            and isinstance(output.get("schema"), dict)):
        launch["outputFormat"] = {"type": "json_schema", "schema": output["schema"]}
    return launch


def _thinking(value: object) -> dict[str, Any] | None:
    """The SDK's thinking config for the message's `thinking`, or None for a bad one."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind in ("adaptive", "disabled"):
        return {"type": kind}
    if kind != "enabled":
        return None
    budget = value.get("budgetTokens", DEFAULT_THINKING_BUDGET)
    if (isinstance(budget, bool) or not isinstance(budget, int)
            or not MIN_THINKING_BUDGET <= budget <= MAX_THINKING_BUDGET):
        return None
    return {"type": "enabled", "budget_tokens": budget}


def _started_with(environ: Mapping[str, str]) -> dict[str, Any]:
    """The session's config from the runner (`SESSION_CONFIG_ENV`), as turn options."""
    raw = environ.get(SESSION_CONFIG_ENV)
    if not raw:
        return {}
    try:
        return {SESSION_CONFIG_OPTION: orjson.loads(raw)}
    except orjson.JSONDecodeError as exc:
        raise AgentLoadError(f"{SESSION_CONFIG_ENV} is not JSON: {exc}") from None


def _start_launch(started: Mapping[str, Any]) -> dict[str, Any]:
    """The launch options the CLI starts with, before any turn; a bad config stops the
    bridge from starting."""
    try:
        return launch_options(started)
    except ClaudeAgentError as exc:
        raise AgentLoadError(str(exc)) from None


def session_model(options: Mapping[str, Any]) -> str | None:
    """The session's `model` (already checked by `launch_options`)."""
    session = options.get(SESSION_CONFIG_OPTION)
    return _text(session.get("model")) if isinstance(session, dict) else None


@dataclass(slots=True)
class SavedSession:
    """What outlives the bridge besides the CLI's own files: which conversation is ours."""

    session_id: str | None = None
    turns: int = 0


def load_saved(path: Path) -> SavedSession:
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return SavedSession()
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"ash-bridge: ignoring unreadable {path}: {exc}", file=sys.stderr)
        return SavedSession()
    if not isinstance(raw, dict):
        return SavedSession()
    return SavedSession(_text(raw.get("session_id")), _positive_int(raw.get("turns")) or 0)


def save_session(path: Path, saved: SavedSession) -> None:
    """Replace the file atomically, so a kill mid-write leaves the previous one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(orjson.dumps(asdict(saved)))
    os.replace(temp, path)


def has_transcript(home: Path, session_id: str) -> bool:
    """Whether the CLI's conversation file for `session_id` is in HOME (any project dir:
    the CLI finds it there even when the workspace path changed)."""
    return any((home / ".claude" / "projects").glob(f"*/{session_id}.jsonl"))


@dataclass(slots=True)
class TurnState:
    """One turn's progress, as read from the CLI's messages."""

    max_turns: int | None
    model_calls: set[str] = field(default_factory=set)
    """Ids of the main thread's model responses so far (one per API call)."""
    stop_reason: str | None = None
    """Set when the backend itself ends the turn early: "interrupted" or "max_turns"."""
    partials: bool = True
    """Stream deltas and `stream_event` messages (the message's `includePartialMessages`)."""


def _tool_events(raw: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """`tool_use` events of an assistant message, `tool_result` events of a user message."""
    message = raw.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    found = []
    parent = raw.get("parent_tool_use_id")
    for block in content:
        if not isinstance(block, dict):
            continue
        if raw.get("type") == "assistant" and block.get("type") == "tool_use":
            payload = {"id": block.get("id"), "name": block.get("name"),
                       "input": block.get("input")}
            kind = events.TOOL_USE
        elif raw.get("type") == "user" and block.get("type") == "tool_result":
            payload = {"tool_use_id": block.get("tool_use_id"), "content": block.get("content"),
                       "is_error": bool(block.get("is_error"))}
            kind = events.TOOL_RESULT
        else:
            continue
        if parent is not None:
            payload["parent_tool_use_id"] = parent
        found.append((kind, orjson.dumps(payload)))
    return found


def delta_event(raw: Mapping[str, Any]) -> tuple[str, bytes] | None:
    """The event of a main-thread partial stream event's delta, as the reference names it:
    `text_delta {delta}`, `thinking_delta {delta}`, or (wire.events.FORWARDED_DELTA_TYPES)
    an event named after the delta carrying the raw delta."""
    if raw.get("parent_tool_use_id") is not None:
        return None
    event = raw.get("event")
    if not isinstance(event, dict) or event.get("type") != "content_block_delta":
        return None
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return None
    kind = delta.get("type")
    if kind == "text_delta":
        return events.TEXT_DELTA, orjson.dumps({"delta": delta.get("text", "")})
    if kind == "thinking_delta":
        return events.THINKING_DELTA, orjson.dumps({"delta": delta.get("thinking", "")})
    if kind in events.FORWARDED_DELTA_TYPES:
        return kind, orjson.dumps(delta)
    return None


def thinking_events(raw: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """`thinking_delta {delta}` for each complete thinking block of a main-thread assistant
    message: how thinking reaches a client that asked for no partial messages."""
    message = raw.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if raw.get("parent_tool_use_id") is not None or not isinstance(content, list):
        return []
    return [(events.THINKING_DELTA, orjson.dumps({"delta": block.get("thinking", "")}))
            for block in content
            if isinstance(block, dict) and block.get("type") == "thinking"]


def result_error(result: Mapping[str, Any]) -> str:
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    return _text(result.get("result")) or str(result.get("subtype") or "unknown error")


async def _raw_messages(client: ClaudeSDKClient) -> AsyncIterator[dict[str, Any]]:
    """The CLI's messages as it sent them. The typed `receive_messages()` rebuilds each one
    as a dataclass and drops fields; ours pass through to the client as the CLI's JSON."""
    query = client._query
    if query is None:
        raise CLIConnectionError("not connected")
    async with contextlib.aclosing(query.receive_messages()) as messages:
        async for raw in messages:
            yield raw


class ClaudeAgent:
    """The AgentBackend over one live CLI: turns go to it in order, `interrupt` reaches the
    running one, and a CLI that dies is replaced on the same conversation at the next turn."""

    def __init__(self, context: AgentContext) -> None:
        if not has_credentials(context.environ):
            raise AgentLoadError(
                "the claude backend needs model credentials: ANTHROPIC_API_KEY (and "
                "ANTHROPIC_BASE_URL for another endpoint) in the agent's env, or the runner's")
        self._context = context
        self._settings = ClaudeSettings.resolve(context.config, context.environ)
        self._session_path = context.home / SESSION_FILE
        self._saved = load_saved(self._session_path)
        self._client: ClaudeSDKClient | None = None
        self._connecting: asyncio.Task[ClaudeSDKClient] | None = None
        self._model = self._settings.model
        started = _started_with(context.environ)
        self._launch = _start_launch(started)
        """The launch options (`launch_options`) the running CLI was started with."""
        self._default_model = session_model(started) or self._settings.model
        """The model of a turn that names none: the session's, else the agent's."""
        self._interrupt_requested = False
        self._query_sent = False
        self._interrupting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the CLI now rather than at the first turn; raises AgentLoadError if it cannot."""
        try:
            await self._connected()
        except Exception as exc:
            raise AgentLoadError(f"claude CLI did not start: {exc}") from exc

    async def close(self) -> None:
        """Stop the CLI: end of input first, so it exits on its own with its files written."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await client.disconnect()

    def interrupt(self) -> None:
        self._interrupt_requested = True
        if self._query_sent:
            self._send_interrupt()

    async def run_turn(self, prompt: str, options: dict[str, Any], emit: Emit) -> str:
        try:
            return await self._run_turn(prompt, options, emit)
        finally:
            self._interrupt_requested = False
            self._query_sent = False

    # --- the CLI process ------------------------------------------------------------

    async def _connected(self) -> ClaudeSDKClient:
        if self._client is not None:
            return self._client
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.create_task(self._connect())
        try:
            self._client = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        return self._client

    async def _connect(self) -> ClaudeSDKClient:
        home = self._context.home
        resume = self._saved.session_id
        if resume and not has_transcript(home, resume):
            print(f"ash-bridge: conversation {resume} is not in {home}/.claude; "
                  "starting a new one", file=sys.stderr)
            resume = None
        try:
            return await self._start_client(resume)
        except Exception as exc:
            if resume is None:
                raise
            print(f"ash-bridge: resuming conversation {resume} failed ({exc}); "
                  "starting a new one", file=sys.stderr)
            return await self._start_client(None)

    async def _start_client(self, resume: str | None) -> ClaudeSDKClient:
        launch = self._launch
        options = ClaudeAgentOptions(
            cwd=str(self._context.home),
            system_prompt={"type": "file", "path": self._system_prompt_file(launch)},
            permission_mode=self._permission_mode(launch),  # type: ignore[arg-type]
            include_partial_messages=True,
            model=self._default_model,
            env=cli_env(self._context.environ),
            resume=resume,
            cli_path=self._settings.cli_path,
            allowed_tools=list(launch.get("allowedTools", [])),
            disallowed_tools=list(launch.get("disallowedTools", [])),
            betas=list(launch.get("betas", [])),
            agents={name: AgentDefinition(**agent)
                    for name, agent in launch.get("subagents", {}).items()} or None,
            extra_args={"agent": launch["initialAgent"]} if "initialAgent" in launch else {},
            max_budget_usd=launch.get("maxBudgetUsd"),
            effort=launch.get("effort"),
            thinking=launch.get("thinking"),  # type: ignore[arg-type]
            output_format=launch.get("outputFormat"),
        )
        if "mcpServers" in launch:
            options.mcp_servers = self._launch_file("mcp.json", orjson.dumps(
                {"mcpServers": {name: _mcp_server(server)
                                for name, server in launch["mcpServers"].items()}}))
        client = ClaudeSDKClient(options)
        async with asyncio.timeout(self._settings.connect_timeout):
            await client.connect()
        self._model = self._default_model
        return client

    def _system_prompt_file(self, launch: Mapping[str, Any]) -> str:
        """The session's `systemPrompt`, which replaces CLAUDE.md, else CLAUDE.md."""
        if "systemPrompt" in launch:
            return self._launch_file("system-prompt.md", launch["systemPrompt"].encode())
        return str(self._context.agent_dir / SYSTEM_PROMPT_FILE)

    def _permission_mode(self, launch: Mapping[str, Any]) -> str:
        """The session's `permissionMode`; `permissionsByAgent` (or none) is the agent's."""
        mode = launch.get("permissionMode", "permissionsByAgent")
        return self._settings.permission_mode if mode == "permissionsByAgent" else mode

    def _launch_file(self, name: str, data: bytes) -> str:
        path = self._context.home / LAUNCH_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    async def _relaunch(self, launch: dict[str, Any]) -> ClaudeSDKClient:
        """Restart the CLI with other launch options, resuming the same conversation."""
        await self.close()
        self._launch = launch
        return await self._connected()

    def _drop_client(self) -> None:
        """Forget a client that failed; the next turn starts a new CLI on the same conversation."""
        client, self._client = self._client, None
        if client is not None:
            asyncio.get_running_loop().create_task(_disconnect_quietly(client))

    def _send_interrupt(self) -> None:
        client = self._client
        if client is None or (self._interrupting and not self._interrupting.done()):
            return
        self._interrupting = asyncio.get_running_loop().create_task(_interrupt(client))

    # --- one turn -------------------------------------------------------------------

    async def _run_turn(self, prompt: str, options: dict[str, Any], emit: Emit) -> str:
        launch = launch_options(options)
        self._default_model = session_model(options) or self._settings.model
        client = await self._connected()
        if launch != self._launch:
            client = await self._relaunch(launch)
        self._saved.turns += 1
        max_turns = _positive_int(options.get("maxTurns"))
        state = TurnState(min(max_turns, MAX_AGENT_TURNS) if max_turns
                          else self._settings.max_turns,
                          partials=options.get(events.INCLUDE_PARTIAL_MESSAGES) is not False)
        if self._interrupt_requested:
            save_session(self._session_path, self._saved)
            await emit(events.TURN_COMPLETE, orjson.dumps({
                "numTurns": 0, "result": "", "turn": self._saved.turns,
                "stop_reason": "interrupted", "session_id": self._saved.session_id}))
            return "interrupted"
        try:
            client = await self._send(client, _user_content(prompt, options),
                                      _text(options.get("model")))
            async for raw in _raw_messages(client):
                if raw.get("type") == "result":
                    return await self._finish(raw, state, emit)
                await self._forward(raw, state, emit)
        except ConnectionError:
            raise
        except Exception:
            self._drop_client()
            raise
        self._drop_client()
        raise ClaudeAgentError("the claude CLI exited before the turn ended")

    async def _send(self, client: ClaudeSDKClient, content: str | list[dict[str, Any]],
                    model: str | None) -> ClaudeSDKClient:
        """Send the user's message; a CLI that died since the last turn is replaced first."""
        try:
            await self._use_model(client, model)
            await client.query(content if isinstance(content, str) else _user_messages(content))
        except CLIConnectionError:
            self._drop_client()
            client = await self._connected()
            await self._use_model(client, model)
            await client.query(content if isinstance(content, str) else _user_messages(content))
        self._query_sent = True
        if self._interrupt_requested:
            self._send_interrupt()
        return client

    async def _use_model(self, client: ClaudeSDKClient, model: str | None) -> None:
        wanted = model or self._default_model
        if wanted != self._model:
            await client.set_model(wanted)
            self._model = wanted

    async def _forward(self, raw: dict[str, Any], state: TurnState, emit: Emit) -> None:
        kind = raw.get("type")
        if self._interrupt_requested and kind in ("stream_event", "assistant"):
            self._send_interrupt()  # the CLI may have read the prompt after the last one
        if state.stop_reason is None and self._interrupt_requested:
            state.stop_reason = "interrupted"
        if state.stop_reason is not None and kind in ("stream_event", "assistant"):
            return
        self._note_session(raw)
        if kind == "stream_event":
            if state.partials:
                delta = delta_event(raw)
                if delta is not None:
                    await emit(*delta)
                await emit(events.MESSAGE, orjson.dumps(raw))
            return
        tool_events = _tool_events(raw)
        for event in tool_events:
            await emit(*event)
        if not state.partials and kind == "assistant":
            for event in thinking_events(raw):
                await emit(*event)
        await emit(events.MESSAGE, orjson.dumps(raw))
        if kind == "assistant" and raw.get("parent_tool_use_id") is None:
            message_id = (raw.get("message") or {}).get("id")
            if message_id:
                state.model_calls.add(message_id)
        elif (kind == "user" and tool_events and state.max_turns is not None
              and len(state.model_calls) >= state.max_turns):
            state.stop_reason = "max_turns"  # tool results would start one model call too many
            self._send_interrupt()

    def _note_session(self, raw: Mapping[str, Any]) -> None:
        session_id = raw.get("session_id")
        if isinstance(session_id, str) and session_id and session_id != self._saved.session_id:
            self._saved.session_id = session_id
            save_session(self._session_path, self._saved)

    async def _finish(self, result: dict[str, Any], state: TurnState, emit: Emit) -> str:
        """`turn_complete` from the CLI's result, after an `error` event if the turn failed."""
        self._note_session(result)
        save_session(self._session_path, self._saved)
        failed = bool(result.get("is_error"))
        if state.stop_reason is None and failed and self._interrupt_requested:
            state.stop_reason = "interrupted"  # the CLI reports an aborted turn as an error
        if state.stop_reason is not None:
            stop_reason, failed = state.stop_reason, False
            status = "interrupted" if stop_reason == "interrupted" else "ok"
        elif failed:
            stop_reason = status = "error"
            await emit(events.ERROR, orjson.dumps({
                "error": result_error(result), "code": "model_error",
                "api_error_status": result.get("api_error_status"),
                "terminal_reason": result.get("terminal_reason")}))
        else:
            stop_reason, status = result.get("stop_reason") or "end_turn", "ok"
        await emit(events.TURN_COMPLETE, orjson.dumps({
            "turn": self._saved.turns,
            "stop_reason": stop_reason,
            "is_error": failed,
            "session_id": result.get("session_id") or self._saved.session_id,
            "usage": result.get("usage"),
            "num_turns": result.get("num_turns"),
            "duration_ms": result.get("duration_ms"),
            "duration_api_ms": result.get("duration_api_ms"),
            "total_cost_usd": result.get("total_cost_usd"),
            "numTurns": result.get("num_turns"),
            "result": result.get("result"),
        }))
        await emit(events.MESSAGE, orjson.dumps(result))
        return status


async def _interrupt(client: ClaudeSDKClient) -> None:
    try:
        await client.interrupt()
    except Exception as exc:
        print(f"ash-bridge: interrupt failed: {exc}", file=sys.stderr)


async def _disconnect_quietly(client: ClaudeSDKClient) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await client.disconnect()


def _mcp_server(server: Mapping[str, Any]) -> dict[str, Any]:
    """A session's MCP server as the CLI's config names it: stdio with `command`, http
    (or sse) with `url`."""
    if "url" in server:
        return {"type": server.get("type", "http"), "url": server["url"]}
    entry: dict[str, Any] = {"type": "stdio", "command": server["command"],
                             "args": server.get("args", [])}
    if "env" in server:
        entry["env"] = server["env"]
    return entry


def _user_content(prompt: str, options: dict[str, Any]) -> str | list[dict[str, Any]]:
    """The message's content blocks when the client sent blocks, else its text."""
    blocks = options.get(CONTENT_BLOCKS_OPTION)
    if isinstance(blocks, list) and blocks and all(isinstance(b, dict) for b in blocks):
        return blocks
    return prompt


async def _user_messages(content: str | list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """One user message in the CLI's stream-json input shape."""
    yield {"type": "user", "message": {"role": "user", "content": content},
           "parent_tool_use_id": None}
