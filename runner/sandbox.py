"""Starting a bridge process: its command, its environment, its socket and its log.

This is the one place that spawns a bridge. Today it is a plain child process;
the bubblewrap + cgroups sandbox replaces `spawn_bridge` and keeps its contract.

The bridge gets one end of a socketpair (its fd number in ASH_BRIDGE_FD) and an
environment built from a strict allowlist: nothing from the host reaches it
except PATH, LANG and TERM.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.backend import AgentSpec, SandboxStartError

HOST_ENV_ALLOWLIST = ("PATH", "LANG", "TERM")
BRIDGE_COMMAND = (sys.executable, "-P", "-m", "runner.bridge")
"""`-P`: never put the working directory (the agent's workspace) on the bridge's import path."""
WORKSPACE_DIR = "workspace"
LOG_FILE = "bridge.log"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """Host-wide bridge configuration, the same for every sandbox a backend starts."""

    agent_backend: str = "mock"
    """Agent backend for agents whose agent.json names none."""
    mock_first_token_ms: float | None = None
    mock_token_interval_ms: float | None = None
    mock_tokens: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BridgeSettings:
        """ASH_BACKEND and ASH_MOCK_* from the host environment; bad numbers raise ValueError."""

        def number(name: str, kind: type[float] | type[int]) -> Any:
            raw = environ.get(name)
            if not raw:
                return None
            try:
                return kind(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {raw!r}") from None

        return cls(
            agent_backend=environ.get("ASH_BACKEND") or "mock",
            mock_first_token_ms=number("ASH_MOCK_FIRST_TOKEN_MS", float),
            mock_token_interval_ms=number("ASH_MOCK_TOKEN_INTERVAL_MS", float),
            mock_tokens=number("ASH_MOCK_TOKENS", int),
        )

    def mock_env(self) -> dict[str, str]:
        values = {
            "ASH_MOCK_FIRST_TOKEN_MS": self.mock_first_token_ms,
            "ASH_MOCK_TOKEN_INTERVAL_MS": self.mock_token_interval_ms,
            "ASH_MOCK_TOKENS": self.mock_tokens,
        }
        return {name: str(value) for name, value in values.items() if value is not None}


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """One bridge to start: for which session, running which agent, in which directory."""

    session_id: str
    agent: AgentSpec
    sandbox_dir: Path
    """Holds `workspace/` (the bridge's HOME and cwd) and `bridge.log`, outside it."""
    settings: BridgeSettings = field(default_factory=BridgeSettings)

    @property
    def workspace(self) -> Path:
        return self.sandbox_dir / WORKSPACE_DIR

    @property
    def log_path(self) -> Path:
        return self.sandbox_dir / LOG_FILE


@dataclass(slots=True)
class BridgeProcess:
    """A started bridge: its process, the runner's end of its socket, and its log."""

    process: asyncio.subprocess.Process
    sock: socket.socket
    log_path: Path
    log_offset: int
    """Where this bridge's output starts in the log (earlier bridges of the session precede it)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        """The last lines this bridge wrote to its log."""
        try:
            with open(self.log_path, "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self.log_offset, size - 8192))
                data = log.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").strip().splitlines()[-lines:])


def agent_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The explicit `env` object of an agent's config, checked to be names and strings."""
    raw = config.get("env") or {}
    if not isinstance(raw, dict):
        raise SandboxStartError("agent config `env` must be an object of strings")
    env: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SandboxStartError(f"agent config env {name!r} must be a string")
        text = str(value)
        if not _ENV_NAME.fullmatch(name) or "\0" in text:
            raise SandboxStartError(f"agent config env {name!r} is not a valid variable")
        env[name] = text
    return env


def bridge_env(
    spec: SandboxSpec, bridge_fd: int, host_env: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The bridge's whole environment. The ASH_* variables and HOME always win."""
    env = {name: host_env[name] for name in HOST_ENV_ALLOWLIST if name in host_env}
    env.update(agent_env(spec.agent.config))
    env.update(spec.settings.mock_env())
    backend = spec.agent.config.get("backend")
    env.update({
        "HOME": str(spec.workspace),
        "ASH_BRIDGE_FD": str(bridge_fd),
        "ASH_SESSION_ID": spec.session_id,
        "ASH_AGENT_DIR": os.path.abspath(spec.agent.path),
        "ASH_BACKEND": backend if isinstance(backend, str) else spec.settings.agent_backend,
    })
    return env


async def spawn_bridge(spec: SandboxSpec) -> BridgeProcess:
    """Start the bridge for `spec`. Its stdout and stderr go to `bridge.log`."""
    spec.workspace.mkdir(parents=True, exist_ok=True)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log = -1
    try:
        env = bridge_env(spec, child.fileno())
        log = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        log_offset = os.lseek(log, 0, os.SEEK_END)
        process = await asyncio.create_subprocess_exec(
            *BRIDGE_COMMAND,
            cwd=spec.workspace,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(child.fileno(),),
            start_new_session=True,  # a Ctrl-C at the runner's terminal is not the bridge's
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
        if log >= 0:
            os.close(log)
    return BridgeProcess(process, parent, spec.log_path, log_offset)
