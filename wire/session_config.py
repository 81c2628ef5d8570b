"""A session's own agent options (`POST /api/sessions` beside `agent`, `PATCH .../config`),
checked whole: the gateway answers a `ConfigError` with a 400 naming the field, and the
runner and the bridge check the same config again, trusting no one upstream. No I/O.

Every value that reaches the CLI's command line is refused when it could read as a flag
(a leading `-`) or split a comma-joined list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from wire.options import MAX_AGENT_TURNS, MAX_MODEL_NAME

SESSION_CONFIG_OPTION = "sessionConfig"
"""The turn options key that carries the session's config to the bridge (gateway only)."""
SESSION_KEY = "_session"
"""The agent config key (`CreateSandboxRequest.agent_config_json`) that carries the
session's config to the runner, which checks it, adds its `extraEnv` to the sandbox's
environment and passes the rest to the bridge as `SESSION_CONFIG_ENV`."""
SESSION_CONFIG_ENV = "ASH_SESSION_CONFIG"
"""The session's config (but `extraEnv`) as JSON in the bridge's environment, so the agent
backend starts with it; turns carry it too (`SESSION_CONFIG_OPTION`), PATCHed or not."""
MAX_ENV_CONFIG_BYTES = 96 * 1024
"""Larger configs stay out of the environment (one variable may hold 128 KiB): the first
turn, which carries it, applies it."""

PERMISSION_MODES = ("bypassPermissions", "permissionsByAgent", "default")
PATCHABLE = ("model", "allowedTools", "disallowedTools", "betas", "subagents", "initialAgent")
FIELDS = ("systemPrompt", "model", "extraEnv", "mcpServers", "permissionMode", *PATCHABLE[1:])

MAX_CONFIG_BYTES = 256 * 1024
"""The whole config, as JSON: it rides every turn's options."""
MAX_SYSTEM_PROMPT = 100_000
MAX_ENV_VARS = 64
MAX_ENV_VALUE = 32 * 1024
MAX_TOOLS = 128
MAX_TOOL_NAME = 256
MAX_BETAS = 16
MAX_MCP_SERVERS = 32
MAX_ARGS = 64
MAX_ARG = 4096
MAX_URL = 2048
MAX_SUBAGENTS = 32
MAX_DESCRIPTION = 4096

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
"""An MCP server's, a subagent's or the initial agent's name."""
MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/\[\]-]*")
BETA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

RESERVED_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "TMPDIR", "IS_SANDBOX",
    "CLAUDE_CONFIG_DIR",
})
RESERVED_ENV_PREFIXES = ("ASH_", "ANTHROPIC_", "LD_", "PYTHON")
"""What the runner and the bridge set or depend on: the sandbox's PATH and HOME, the
ASH_* session variables, the model endpoint and key (ANTHROPIC_*, the model proxy's),
the dynamic loader's and Python's knobs (the bridge is a Python process), and where the
CLI keeps the conversation (CLAUDE_CONFIG_DIR)."""


class ConfigError(ValueError):
    """The config is not valid; the message names the field and what it takes."""


def reserved_env_name(name: str) -> bool:
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES)


def check_config(config: Any, fields: tuple[str, ...] = FIELDS) -> dict[str, Any]:
    """`config` checked: an object of `fields` only, each valid; returns it as given."""
    if not isinstance(config, dict):
        raise ConfigError("session config must be a JSON object")
    for name, value in config.items():
        if name not in fields:
            raise ConfigError(f"`{name}` is not a session option here (one of "
                              f"{', '.join(fields)})")
        _CHECKS[name](value, f"`{name}`")
    if len(orjson.dumps(config)) > MAX_CONFIG_BYTES:
        raise ConfigError(f"session config exceeds {MAX_CONFIG_BYTES} bytes as JSON")
    return config


def patch_config(current: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """`current` with `patch` merged in (a field given replaces it, `null` removes it);
    only the PATCHABLE fields may change."""
    if not isinstance(patch, dict):
        raise ConfigError("the body must be a JSON object")
    given = {name: value for name, value in patch.items() if value is not None}
    for name in patch:
        if name not in PATCHABLE:
            raise ConfigError(f"`{name}` cannot be changed after create (PATCH takes "
                              f"{', '.join(PATCHABLE)})")
    check_config(given, PATCHABLE)
    merged = {name: value for name, value in current.items() if name not in patch}
    merged.update(given)
    return check_config(merged)


def _string(value: Any, label: str, limit: int, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\0" in value:
        raise ConfigError(f"{label} must be a string of 1 to {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigError(f"{label} must match {pattern.pattern}")
    return value


def _object(value: Any, label: str, limit: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{label} must be a JSON object")
    if len(value) > limit:
        raise ConfigError(f"{label} may hold at most {limit} entries")
    return value


def _check_system_prompt(value: Any, label: str) -> None:
    _string(value, label, MAX_SYSTEM_PROMPT)


def _check_model(value: Any, label: str) -> None:
    _string(value, label, MAX_MODEL_NAME, MODEL)


def _check_env(value: Any, label: str, *, reserved: bool = True) -> None:
    for name, text in _object(value, label, MAX_ENV_VARS).items():
        if not ENV_NAME.fullmatch(name):
            raise ConfigError(f"{label}: {name[:64]!r} is not a variable name "
                              f"({ENV_NAME.pattern})")
        if reserved and reserved_env_name(name):
            raise ConfigError(f"{label}: {name} is set by the runner and cannot be given "
                              f"(reserved: {', '.join(sorted(RESERVED_ENV_NAMES))}, and "
                              f"{', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)})")
        if not isinstance(text, str) or len(text) > MAX_ENV_VALUE or "\0" in text:
            raise ConfigError(f"{label}.{name} must be a string of at most {MAX_ENV_VALUE} "
                              "characters")


def _check_extra_env(value: Any, label: str) -> None:
    _check_env(value, label)


def _check_mcp_servers(value: Any, label: str) -> None:
    for name, server in _object(value, label, MAX_MCP_SERVERS).items():
        _string(name, f"{label} name", 64, NAME)
        entry = f"{label}.{name}"
        server = _object(server, entry, 5)
        unknown = set(server) - {"type", "url", "command", "args", "env"}
        if unknown:
            raise ConfigError(f"{entry}: unknown field `{sorted(unknown)[0]}` (takes type, "
                              "url, command, args, env)")
        if ("url" in server) == ("command" in server):
            raise ConfigError(f"{entry} must have either `url` or `command`")
        if "url" in server:
            url = _string(server["url"], f"{entry}.url", MAX_URL)
            if not url.startswith(("https://", "http://")):
                raise ConfigError(f"{entry}.url must be an http(s) URL")
            if server.get("type", "http") not in ("http", "sse"):
                raise ConfigError(f"{entry}.type must be http or sse with `url`")
            if "args" in server or "env" in server:
                raise ConfigError(f"{entry}: `args` and `env` go with `command`")
            continue
        if server.get("type", "stdio") != "stdio":
            raise ConfigError(f"{entry}.type must be stdio with `command`")
        _string(server["command"], f"{entry}.command", MAX_ARG)
        args = server.get("args", [])
        if not isinstance(args, list) or len(args) > MAX_ARGS:
            raise ConfigError(f"{entry}.args must be a list of at most {MAX_ARGS} strings")
        for index, arg in enumerate(args):
            if not isinstance(arg, str) or len(arg) > MAX_ARG or "\0" in arg:
                raise ConfigError(f"{entry}.args[{index}] must be a string of at most "
                                  f"{MAX_ARG} characters")
        if "env" in server:
            _check_env(server["env"], f"{entry}.env", reserved=False)


def _check_permission_mode(value: Any, label: str) -> None:
    if value not in PERMISSION_MODES:
        raise ConfigError(f"{label} must be one of {', '.join(PERMISSION_MODES)}")


def _check_tools(value: Any, label: str) -> None:
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise ConfigError(f"{label} must be a list of at most {MAX_TOOLS} tool names")
    for index, tool in enumerate(value):
        _string(tool, f"{label}[{index}]", MAX_TOOL_NAME)
        if tool.startswith("-") or "," in tool or not tool.isprintable():
            raise ConfigError(f"{label}[{index}] must not start with '-' or hold a comma "
                              "or a control character")


def _check_betas(value: Any, label: str) -> None:
    if not isinstance(value, list) or len(value) > MAX_BETAS:
        raise ConfigError(f"{label} must be a list of at most {MAX_BETAS} beta names")
    for index, beta in enumerate(value):
        _string(beta, f"{label}[{index}]", 128, BETA)


def _check_subagents(value: Any, label: str) -> None:
    for name, agent in _object(value, label, MAX_SUBAGENTS).items():
        _string(name, f"{label} name", 64, NAME)
        entry = f"{label}.{name}"
        agent = _object(agent, entry, 6)
        unknown = set(agent) - {"description", "prompt", "tools", "disallowedTools", "model",
                                "maxTurns"}
        if unknown:
            raise ConfigError(f"{entry}: unknown field `{sorted(unknown)[0]}` (takes "
                              "description, prompt, tools, disallowedTools, model, maxTurns)")
        _string(agent.get("description"), f"{entry}.description", MAX_DESCRIPTION)
        _string(agent.get("prompt"), f"{entry}.prompt", MAX_SYSTEM_PROMPT)
        for tools in ("tools", "disallowedTools"):
            if tools in agent:
                _check_tools(agent[tools], f"{entry}.{tools}")
        if "model" in agent:
            _check_model(agent["model"], f"{entry}.model")
        turns = agent.get("maxTurns", 1)
        if isinstance(turns, bool) or not isinstance(turns, int) or not (
                1 <= turns <= MAX_AGENT_TURNS):
            raise ConfigError(f"{entry}.maxTurns must be an integer in [1, {MAX_AGENT_TURNS}]")


def _check_initial_agent(value: Any, label: str) -> None:
    _string(value, label, 64, NAME)


_CHECKS = {
    "systemPrompt": _check_system_prompt,
    "model": _check_model,
    "extraEnv": _check_extra_env,
    "mcpServers": _check_mcp_servers,
    "permissionMode": _check_permission_mode,
    "allowedTools": _check_tools,
    "disallowedTools": _check_tools,
    "betas": _check_betas,
    "subagents": _check_subagents,
    "initialAgent": _check_initial_agent,
}


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the session JSON shows it: environment values are masked (they may
    be secrets), their names kept."""
    shown = dict(config)
    if "extraEnv" in shown:
        shown["extraEnv"] = dict.fromkeys(shown["extraEnv"], MASK)
    if "mcpServers" in shown:
        shown["mcpServers"] = {
            name: {**server, "env": dict.fromkeys(server["env"], MASK)} if "env" in server
            else server
            for name, server in shown["mcpServers"].items()}
    return shown


MASK = "***"
