"""The bridge process: serve bridge-protocol commands on the socket the runner passed in.

Startup: take the socket ASH_BRIDGE_FD names (then forget the name, keep the socket out
of every process the agent starts, and make this process non-dumpable: see
`hide_bridge_socket`), load the agent (ASH_BACKEND, ASH_AGENT_DIR), send
`ready`. Then `query` runs a turn, `interrupt` stops it, `shutdown` exits. When
the socket reaches EOF the runner is gone and the bridge exits with it, so a
bridge never outlives its runner.

A warm-pool bridge (ASH_WARM_SLOT set, `runner.warm_pool`) is started before its
session exists: it imports its agent backend's code, sends `warm` and waits. The
runner's `bind` then carries the session's variables (agent, session id, model
token); from there on it starts exactly as a bridge spawned for that session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from runner.backend import EXEC_MAX_TIMEOUT, EXEC_OUTPUT_CAP
from runner.bridge.agent import (
    DEFAULT_BACKEND,
    AgentBackend,
    AgentLoadError,
    Emit,
    close_agent,
    load_agent,
    preload_backend,
    start_agent,
)
from runner.bridge.model_relay import ModelRelay, listen_address
from runner.bridge.shell import run_shell
from runner.timing import TIMING, TurnPoints
from wire import events
from wire import timing as wt
from wire.bridge import HEADER_SIZE, FrameError, body_length, decode_body, encode_frame

EXIT_CONFIG_ERROR = 2
BRIDGE_FD_ENV = "ASH_BRIDGE_FD"
PR_SET_DUMPABLE = 4
MODEL_RESPONSE_TYPES = frozenset({events.MODEL_RESPONSE_HEAD, events.MODEL_RESPONSE_CHUNK,
                                  events.MODEL_RESPONSE_END})


class BadQuery(ValueError):
    """A `query` payload that is not `{"prompt": str, "options": {...}}`."""


class BadBind(ValueError):
    """A warm bridge's first command is not a `bind` carrying `{"env": {str: str}}`."""


def parse_bind(payload: bytes) -> dict[str, str]:
    try:
        bind = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadBind(f"bind payload is not JSON: {exc}") from exc
    env = bind.get("env") if isinstance(bind, dict) else None
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\0" not in k + v
            for k, v in env.items()):
        raise BadBind("bind payload must be an object with an `env` of strings")
    return env


def parse_query(payload: bytes) -> tuple[str, dict[str, Any]]:
    try:
        query = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadQuery(f"query payload is not JSON: {exc}") from exc
    if not isinstance(query, dict) or not isinstance(query.get("prompt"), str):
        raise BadQuery("query payload must be an object with a string `prompt`")
    options = query.get("options") or {}
    if not isinstance(options, dict):
        raise BadQuery("query `options` must be an object")
    return query["prompt"], options


def parse_exec(payload: bytes) -> tuple[str, str, float]:
    """`{"id": str, "command": str, "timeout_ms": number}` -> (id, command, seconds)."""
    try:
        request = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadQuery(f"exec payload is not JSON: {exc}") from exc
    if not isinstance(request, dict) or not isinstance(request.get("id"), str):
        raise BadQuery("exec payload must be an object with a string `id`")
    command, timeout_ms = request.get("command"), request.get("timeout_ms")
    if not isinstance(command, str) or not isinstance(timeout_ms, int | float):
        raise BadQuery("exec needs a string `command` and a numeric `timeout_ms`")
    return request["id"], command, min(max(timeout_ms / 1000, 0.001), EXEC_MAX_TIMEOUT)


class Bridge:
    """One connection's command loop. Turns run as tasks so `interrupt` can reach them;
    `exec` commands run as tasks of their own, beside any turn."""

    def __init__(self, agent: AgentBackend, writer: asyncio.StreamWriter, home: Path,
                 relay: ModelRelay | None = None) -> None:
        self._agent = agent
        self._relay = relay
        self._writer = writer
        self._home = home
        self._session_id = os.environ.get("ASH_SESSION_ID", "")
        """Named in every `done` (`{"sessionId", "status"}`), as the reference's `done` is."""
        self._turn: asyncio.Task[None] | None = None
        self._execs: set[asyncio.Task[None]] = set()
        self._pending = 0
        """Turns whose query arrived and whose `run_turn` has not returned yet."""

    async def emit(self, event_type: str, payload: bytes) -> None:
        self._writer.write(encode_frame(event_type, payload))
        await self._writer.drain()

    async def serve(self, reader: asyncio.StreamReader) -> int:
        """Run commands until `shutdown` or EOF; returns the exit code."""
        try:
            while True:
                try:
                    header = await reader.readexactly(HEADER_SIZE)
                    command = decode_body(await reader.readexactly(body_length(header)))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return 0
                except FrameError as exc:
                    print(f"ash-bridge: corrupt command stream: {exc}", file=sys.stderr)
                    return 1
                if command.type == events.QUERY:
                    self._start_turn(command.data)
                elif command.type == events.INTERRUPT:
                    if self._pending:
                        self._agent.interrupt()
                elif command.type == events.EXEC:
                    task = asyncio.create_task(self._exec(command.data))
                    self._execs.add(task)
                    task.add_done_callback(self._execs.discard)
                elif command.type == events.SHUTDOWN:
                    return 0
                elif command.type in MODEL_RESPONSE_TYPES and self._relay is not None:
                    self._relay.dispatch(command)
                else:
                    print(f"ash-bridge: ignoring unknown command {command.type!r}", file=sys.stderr)
        finally:
            running = [*self._execs, *([self._turn] if self._turn is not None else [])]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self._writer.close()

    async def _exec(self, payload: bytes) -> None:
        try:
            exec_id, command, time_limit = parse_exec(payload)
        except BadQuery as exc:
            print(f"ash-bridge: bad exec command: {exc}", file=sys.stderr)
            return
        try:
            result = await run_shell(command, self._home, time_limit=time_limit,
                                     cap=EXEC_OUTPUT_CAP)
            answer = {
                "id": exec_id,
                "exitCode": result.exit_code,
                "stdout": result.stdout.decode("utf-8", "replace"),
                "stderr": result.stderr.decode("utf-8", "replace"),
                "truncated": result.truncated,
                "timedOut": result.timed_out,
            }
        except OSError as exc:
            answer = {"id": exec_id, "exitCode": 127, "stdout": "", "truncated": False,
                      "stderr": f"cannot run command: {exc}", "timedOut": False}
        with contextlib.suppress(ConnectionError):
            await self.emit(events.EXEC_RESULT, orjson.dumps(answer))

    def _start_turn(self, payload: bytes) -> None:
        self._pending += 1
        points = TurnPoints(payload, time.monotonic_ns()) if TIMING else None
        self._turn = asyncio.create_task(self._run_turn(self._turn, payload, points))

    async def _run_turn(self, previous: asyncio.Task[None] | None, payload: bytes,
                        points: TurnPoints | None = None) -> None:
        """One turn, after the one before it: its events, then exactly one `done` (with
        ASH_DEBUG_TIMING, the turn's `timing` frame just before it)."""
        try:
            if previous is not None:
                await asyncio.wait({previous})
            emit = self.emit if points is None else points.emitter(self.emit)
            status, failure = await self._agent_turn(payload, emit)
            if isinstance(failure, BadQuery):
                await self._error(str(failure), "bad_request")
            elif failure is not None:
                traceback.print_exception(failure)
                await self._error(f"agent failed: {failure}", "agent_error")
            if points is not None and (batch := points.frame_payload()) is not None:
                await self.emit(wt.FRAME, batch)
            await self.emit(events.DONE, events.done_payload(self._session_id, status))
        except ConnectionError:
            pass  # the runner is gone; the command loop sees EOF and exits

    async def _agent_turn(self, payload: bytes, emit: Emit) -> tuple[str, Exception | None]:
        """The agent's part of a turn; it stops being interruptible the moment it returns."""
        try:
            prompt, options = parse_query(payload)
            return await self._agent.run_turn(prompt, options, emit), None
        except ConnectionError:
            raise
        except Exception as exc:
            return "error", exc
        finally:
            self._pending -= 1

    async def _error(self, message: str, code: str) -> None:
        await self.emit(events.ERROR, orjson.dumps({"error": message, "code": code}))


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                agent: AgentBackend, backend: str, relay: ModelRelay | None = None) -> int:
    bridge = Bridge(agent, writer, Path(os.environ.get("HOME") or Path.cwd()), relay)
    if relay is not None:
        relay.attach(bridge.emit)
    try:
        await bridge.emit(events.READY, orjson.dumps({"backend": backend, "pid": os.getpid()}))
    except ConnectionError:
        writer.close()
        return 0
    return await bridge.serve(reader)


async def await_bind(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     environ: Mapping[str, str]) -> dict[str, str] | None:
    """A warm bridge's wait for its session: load the backend's code, send `warm`, read
    `bind`. Its variables join the environment (for the agent and every process it starts);
    the environment to start with, or None when the runner hangs up first."""
    preload_backend(environ.get("ASH_BACKEND") or DEFAULT_BACKEND)
    try:
        writer.write(encode_frame(events.WARM, b"{}"))
        await writer.drain()
        header = await reader.readexactly(HEADER_SIZE)
        command = decode_body(await reader.readexactly(body_length(header)))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except FrameError as exc:
        raise BadBind(f"corrupt command stream: {exc}") from exc
    if command.type != events.BIND:
        raise BadBind(f"a warm bridge's first command must be `bind`, not {command.type!r}")
    env = parse_bind(command.data)
    os.environ.update(env)
    return {**environ, **env}


def hide_bridge_socket(fd: int) -> None:
    """Keep the agent's processes (same uid) away from the bridge socket: no variable
    names it, no child inherits it, and no process of the sandbox can open
    /proc/<bridge>/fd/N, read /proc/<bridge>/environ or ptrace the bridge (a non-dumpable
    process's /proc files belong to root). The runner still checks every frame."""
    os.environ.pop(BRIDGE_FD_ENV, None)
    os.set_inheritable(fd, False)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


async def run(environ: Mapping[str, str]) -> int:
    try:
        fd = int(environ[BRIDGE_FD_ENV])
        sock = socket.socket(fileno=fd)
        hide_bridge_socket(fd)
    except (KeyError, ValueError, OSError) as exc:
        print(f"ash-bridge: ASH_BRIDGE_FD must name the runner's socket ({exc})", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    environ = {name: value for name, value in environ.items() if name != BRIDGE_FD_ENV}
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    if environ.get(events.WARM_SLOT_ENV):
        try:
            bound = await await_bind(reader, writer, environ)
        except BadBind as exc:
            print(f"ash-bridge: {exc}", file=sys.stderr)
            writer.close()
            return EXIT_CONFIG_ERROR
        if bound is None:
            writer.close()
            return 0
        environ = bound
    backend = environ.get("ASH_BACKEND") or DEFAULT_BACKEND
    relay: ModelRelay | None = None
    try:
        if environ.get("ASH_MODEL_PROXY") == "1":
            relay = ModelRelay()
            await relay.start(*listen_address(environ.get("ASH_MODEL_BASE_URL", "")))
            environ = {**environ, "ASH_MODEL_BASE_URL": f"http://127.0.0.1:{relay.port}"}
        agent = load_agent(backend, environ)
        await start_agent(agent)
    except (AgentLoadError, OSError) as exc:
        print(f"ash-bridge: {exc}", file=sys.stderr)
        writer.close()
        if relay is not None:
            await relay.close()
        return EXIT_CONFIG_ERROR
    try:
        return await serve(reader, writer, agent, backend, relay)
    finally:
        await close_agent(agent)
        if relay is not None:
            await relay.close()


def close_inherited_fds(environ: Mapping[str, str]) -> None:
    """Keep stdio and the bridge socket; close anything else a launcher left open (a
    sandbox's setup pipes), so nothing reachable through /proc/<bridge>/fd is extra."""
    try:
        keep = int(environ[BRIDGE_FD_ENV])
    except (KeyError, ValueError):
        return
    if keep > 3:
        os.closerange(3, keep)
    os.closerange(max(keep + 1, 3), os.sysconf("SC_OPEN_MAX"))


def main() -> int:
    close_inherited_fds(os.environ)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(os.environ))
    return uvloop.run(run(os.environ))
