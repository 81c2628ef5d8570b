"""Starting a bridge process: its command, its environment, its socket and its log.

This is the one place that spawns a bridge: inside a bubblewrap sandbox in its own
cgroup when given an isolation that sandboxes (`runner.isolation`), else as a plain
child process (`--sandbox=none`, development only).

The bridge gets one end of a socketpair (its fd number in ASH_BRIDGE_FD) and an
environment built from a strict allowlist: nothing from the host reaches it except
LANG and TERM (and PATH, for a plain process), plus the agent's own `env`. A sandboxed
bridge writes its output into a pipe the runner copies into `bridge.log` (bounded): no
host file descriptor enters a sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from runner import bwrap
from runner.backend import AgentSpec, SandboxStartError
from runner.bridge_client import BridgeClient
from runner.timing import TIMING
from wire import timing as wt
from wire.bridge_limits import BridgeLimits, Violation
from wire.credentials import sandbox_env as credential_env
from wire.events import WARM_SLOT_ENV, Event
from wire.session_config import (
    MAX_ENV_CONFIG_BYTES,
    SESSION_CONFIG_ENV,
    SESSION_KEY,
    ConfigError,
    check_config,
)

if TYPE_CHECKING:
    from runner.isolation import Isolation, SandboxHandle

HOST_ENV_ALLOWLIST = ("PATH", "LANG", "TERM")
SANDBOX_HOST_ENV = ("LANG", "TERM")
"""A sandbox has its own PATH: the host's names directories it cannot see."""
LOG_CAP = 1024 * 1024
"""Bytes of a sandboxed bridge's output kept per start; an agent that floods it through
/proc/<bridge>/fd/2 cannot fill the host's disk."""
BRIDGE_COMMAND = (sys.executable, "-P", "-m", "runner.bridge")
"""`-P`: never put the working directory (the agent's workspace) on the bridge's import path."""
WORKSPACE_DIR = "workspace"
MODEL_PROXY_PORT = 4180
"""The bridge's model relay port in a sandbox's own network namespace (0, any free port,
for a plain process, which shares the host's)."""
LOG_FILE = "bridge.log"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """Host-wide bridge configuration, the same for every sandbox a backend starts."""

    agent_backend: str = "mock"
    """Agent backend for agents whose agent.json names none."""
    backend_chosen: bool = False
    """ASH_BACKEND chose `agent_backend` (else the runner's key did: a session's own
    anthropic credential then makes it `claude` too)."""
    mock_first_token_ms: float | None = None
    mock_token_interval_ms: float | None = None
    mock_tokens: int | None = None
    limits: BridgeLimits = field(default_factory=BridgeLimits)
    """What a bridge may send (ASH_BRIDGE_*: wire/bridge_limits.py)."""

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
            agent_backend=environ.get("ASH_BACKEND")
            or ("claude" if environ.get("ANTHROPIC_API_KEY") else "mock"),
            backend_chosen=bool(environ.get("ASH_BACKEND")),
            mock_first_token_ms=number("ASH_MOCK_FIRST_TOKEN_MS", float),
            mock_token_interval_ms=number("ASH_MOCK_TOKEN_INTERVAL_MS", float),
            mock_tokens=number("ASH_MOCK_TOKENS", int),
            limits=BridgeLimits.from_env(environ),
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
    model_token: str | None = None
    """The per-session token the bridge's model relay presents, when the runner proxies
    model calls; the real key never reaches the bridge."""

    @property
    def workspace(self) -> Path:
        return self.sandbox_dir / WORKSPACE_DIR

    @property
    def log_path(self) -> Path:
        return self.sandbox_dir / LOG_FILE

    @property
    def backend(self) -> str:
        """The agent backend: the agent's config names it, else the runner's default (which
        a session's anthropic credential makes `claude` unless ASH_BACKEND chose it)."""
        backend = self.agent.config.get("backend")
        if isinstance(backend, str):
            return backend
        credential = self.agent.credential
        if credential is not None and credential.proxied and not self.settings.backend_chosen:
            return "claude"
        return self.settings.agent_backend


class LogPump:
    """Copies a sandboxed bridge's stdout and stderr from a pipe into its log file, up to
    LOG_CAP bytes; the rest is read and dropped."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.offset = log_path.stat().st_size if log_path.exists() else 0
        self._written = 0
        self._truncated = False
        self._reading = False

    def start(self) -> None:
        """Close the runner's copy of the write end and copy as output arrives."""
        self.close_write_end()
        asyncio.get_running_loop().add_reader(self.read_fd, self.drain)
        self._reading = True

    def close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def drain(self) -> None:
        """Copy what the pipe holds now (at most 1 MiB a call: a flood cannot hold the
        event loop); at end of file, stop."""
        chunks = []
        for _ in range(16):
            if self.read_fd < 0:
                break
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.close()
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        room = max(LOG_CAP - self._written, 0)
        kept = data[:room]
        if len(data) > room and not self._truncated:
            self._truncated = True
            kept += b"\n[ash: bridge output beyond %d bytes dropped]\n" % LOG_CAP
        self._written += len(data)
        if kept:
            try:
                log = os.open(self.log_path,
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                return  # its directory is being moved (a warm sandbox bound to its session)
            try:
                os.write(log, kept)
            finally:
                os.close(log)

    def close(self) -> None:
        self.close_write_end()
        if self.read_fd >= 0:
            if self._reading:
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop().remove_reader(self.read_fd)
            os.close(self.read_fd)
            self.read_fd = -1


@dataclass(slots=True)
class BridgeProcess:
    """A started bridge: its process, the runner's end of its socket, and its log."""

    process: asyncio.subprocess.Process
    sock: socket.socket
    log_path: Path
    log_offset: int
    """Where this bridge's output starts in the log (earlier bridges of the session precede it)."""
    log_pump: LogPump | None = None
    sandbox: SandboxHandle | None = None
    """Its cgroup and limits, when it runs in a sandbox."""

    @property
    def pid(self) -> int:
        """The pid of the process the runner started (bubblewrap's, for a sandbox)."""
        return self.process.pid

    def move_log(self, log_path: Path) -> None:
        """The log file was renamed (with its directory) to `log_path`: write there."""
        self.log_path = log_path
        if self.log_pump is not None:
            self.log_pump.log_path = log_path

    def log_tail(self, lines: int = 20) -> str:
        """The last lines this bridge wrote to its log."""
        if self.log_pump is not None:
            self.log_pump.drain()
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


def session_config_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The session's config (`SESSION_KEY`), checked again here: its `extraEnv` (no name
    the runner or the bridge sets or depends on: `wire.session_config.RESERVED_ENV_NAMES`)
    and the rest as `SESSION_CONFIG_ENV`, for the agent backend to start with."""
    session = config.get(SESSION_KEY)
    if session is None:
        return {}
    try:
        check_config(session)
    except ConfigError as exc:
        raise SandboxStartError(f"session config: {exc}") from None
    env = dict(session.get("extraEnv", {}))
    rest = orjson.dumps({name: value for name, value in session.items() if name != "extraEnv"})
    if len(rest) <= MAX_ENV_CONFIG_BYTES:
        env[SESSION_CONFIG_ENV] = rest.decode()
    return env


def session_env(spec: SandboxSpec, *, sandboxed: bool = False) -> dict[str, str]:
    """What a bridge's environment holds for its session and agent: the agent's `env`,
    then the session's credential when the model proxy cannot carry it
    (`wire.credentials.sandbox_env`), the session's `extraEnv`, HOME, ASH_SESSION_ID,
    ASH_AGENT_DIR, ASH_BACKEND and the model proxy's token. A warm-pool bridge gets these
    in its `bind` frame instead."""
    env = agent_env(spec.agent.config)
    env.pop(SESSION_CONFIG_ENV, None)
    env.update(credential_env(spec.agent.credential))
    env.update(session_config_env(spec.agent.config))
    env.update(spec.settings.mock_env())
    env.update({
        "HOME": bwrap.HOME if sandboxed else str(spec.workspace),
        "ASH_SESSION_ID": spec.session_id,
        "ASH_AGENT_DIR": bwrap.AGENT_DIR if sandboxed else os.path.abspath(spec.agent.path),
        "ASH_BACKEND": spec.backend,
    })
    env.pop(wt.ENV, None)
    if TIMING:
        env[wt.ENV] = "1"  # the bridge's points come back on its socket (`runner.timing`)
    if spec.model_token is not None:
        port = MODEL_PROXY_PORT if sandboxed else 0
        env.update({
            "ASH_MODEL_PROXY": "1",
            "ASH_MODEL_BASE_URL": f"http://127.0.0.1:{port}",
            "ASH_MODEL_API_KEY": spec.model_token,
        })
    return env


def bridge_env(
    spec: SandboxSpec, bridge_fd: int, host_env: Mapping[str, str] = os.environ,
    *, sandboxed: bool = False,
) -> dict[str, str]:
    """The bridge's whole environment. The ASH_* variables and HOME always win; in a
    sandbox, HOME and the agent folder are their paths inside and PATH is the sandbox's."""
    allowed = SANDBOX_HOST_ENV if sandboxed else HOST_ENV_ALLOWLIST
    env = {name: host_env[name] for name in allowed if name in host_env}
    if sandboxed:
        env["PATH"] = bwrap.PATH
    env.update(session_env(spec, sandboxed=sandboxed))
    env["ASH_BRIDGE_FD"] = str(bridge_fd)
    return env


def warm_env(spec: SandboxSpec, bridge_fd: int,
             host_env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A warm-pool bridge's environment: nothing of any session or agent. ASH_BACKEND
    (the pool's, which every session it serves runs) says which code to load ahead."""
    env = {name: host_env[name] for name in SANDBOX_HOST_ENV if name in host_env}
    env.update(spec.settings.mock_env())
    env.update({
        "PATH": bwrap.PATH,
        "HOME": bwrap.HOME,
        "ASH_BRIDGE_FD": str(bridge_fd),
        "ASH_BACKEND": spec.backend,
        WARM_SLOT_ENV: spec.session_id,
    })
    if TIMING:
        env[wt.ENV] = "1"  # decided when the bridge starts, before any session binds it
    return env


async def spawn_bridge(spec: SandboxSpec, isolation: Isolation | None = None, *,
                       warm: bool = False) -> BridgeProcess:
    """Start the bridge for `spec`, in `isolation`'s sandbox when it has one. Its stdout
    and stderr go to `bridge.log`. `warm`: a warm-pool bridge (sandboxed only), whose spec
    names its pool slot, not a session; it waits for `bind`."""
    if isolation is not None and isolation.sandboxed:
        return await _spawn_sandboxed(spec, isolation, warm)
    if warm:
        raise SandboxStartError("warm-pool bridges run in sandboxes only")
    spec.workspace.mkdir(parents=True, exist_ok=True)
    parent, child = socketpair()
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


async def _spawn_sandboxed(spec: SandboxSpec, isolation: Isolation, warm: bool) -> BridgeProcess:
    parent, child = socketpair()
    pump = LogPump(spec.log_path)
    try:
        env = (warm_env(spec, child.fileno()) if warm
               else bridge_env(spec, child.fileno(), sandboxed=True))
        process, handle = await isolation.start(spec, env, bridge_fd=child.fileno(),
                                                output_fd=pump.write_fd)
        pump.start()
    except SandboxStartError as exc:
        parent.close()
        pump.close_write_end()
        pump.drain()
        pump.close()
        said = _read_from(spec.log_path, pump.offset)
        raise SandboxStartError(f"{exc}: {said}" if said else str(exc)) from exc
    except BaseException:
        parent.close()
        pump.close()
        raise
    finally:
        child.close()
    return BridgeProcess(process, parent, spec.log_path, pump.offset, pump, handle)


async def reap(bridge: BridgeProcess, grace: float, *, kill: bool = False) -> int:
    """The bridge's exit code, once it has exited; it is killed at once with `kill`, else
    after `grace` seconds."""
    process = bridge.process
    if not kill and process.returncode is None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                return await process.wait()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    return await process.wait()


async def first_event(client: BridgeClient, bridge: BridgeProcess, isolation: Isolation,
                      expected: str, within: float) -> Event:
    """The bridge's next event, which must be `expected` (`ready`, or `warm`); otherwise
    SandboxStartError, saying why: it exited (the limit it hit, or its log), it said
    something else, or it said nothing for `within` seconds."""
    try:
        async with asyncio.timeout(within):
            event = await client.next_event()
    except TimeoutError:
        raise SandboxStartError(
            f"bridge not {expected} after {within:g} s: {bridge.log_tail()}") from None
    if event is None:
        if client.violation is not None:
            await reap(bridge, 0, kill=True)
            raise SandboxStartError(f"bridge protocol violation: {client.violation.message}")
        code = await reap(bridge, within)
        hit = isolation.limit_hit(bridge)
        reason = hit.message if hit is not None else bridge.log_tail()
        raise SandboxStartError(f"bridge exited with code {code}: {reason}")
    if event.type != expected:
        raise SandboxStartError(f"bridge sent {event.type!r} before {expected}")
    return event


def kill_now(bridge: BridgeProcess) -> None:
    """SIGKILL the bridge's sandbox at once (from a callback: no waiting); `reap` collects it."""
    if bridge.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            bridge.process.kill()


def killer(bridge: BridgeProcess) -> Callable[[Violation], None]:
    """A BridgeClient violation handler that kills `bridge` at once."""
    return lambda _violation: kill_now(bridge)


async def discard_bridge(bridge: BridgeProcess, client: BridgeClient | None,
                         isolation: Isolation) -> None:
    """Kill a bridge that is not to serve (it failed to start, or is no longer wanted) and
    give back what its sandbox held."""
    await reap(bridge, 0, kill=True)
    await isolation.release_bridge(bridge)
    if client is not None:
        client.close()
    else:
        bridge.sock.close()


def _read_from(path: Path, offset: int, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read(limit).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def socketpair() -> tuple[socket.socket, socket.socket]:
    """The runner's end and the bridge's end of a bridge socket."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
