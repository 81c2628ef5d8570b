"""`LocalBackend`: sandboxes as child processes of this one (standalone mode).

Layout under the data dir, per session:

    sandboxes/<session_id>/workspace/   the bridge's HOME and cwd; the session's state
    sandboxes/<session_id>/workspace.img  its disk, mounted on workspace/ (bwrap sandboxes)
    sandboxes/<session_id>/bridge.log   the bridge's stdout and stderr, outside the workspace

Every bridge runs in the runner's isolation (`runner.isolation`): a bubblewrap sandbox
with cgroup limits by default, a plain process with `--sandbox=none`. With a warm pool
(`runner.warm_pool`, bwrap only), a new session gets a sandbox started ahead of time.

A bridge dies with the runner (it exits on socket EOF); its workspace stays, so a
later `create` for the same session on this data dir resumes it cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shutil
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from runner import timing
from runner.backend import (
    DEFAULT_MAX_SANDBOXES,
    EXEC_MAX_TIMEOUT,
    MAX_SANDBOXES_ENV,
    AgentSpec,
    BackendError,
    BackendStats,
    CapacityExceeded,
    ExecResult,
    SandboxGone,
    SandboxInfo,
    SandboxStartError,
)
from runner.bridge_client import BridgeClient, ExecTimeout, ViolationHandler
from runner.bridge_log import LogPage, read_log
from runner.isolation import BwrapIsolation, Isolation, create_isolation, mode_from_env
from runner.model_proxy import ModelProxy, ModelUpstream, base_url_from_env
from runner.sandbox import (
    LOG_FILE,
    BridgeProcess,
    BridgeSettings,
    SandboxSpec,
    discard_bridge,
    first_event,
    kill_now,
    reap,
    session_env,
    spawn_bridge,
)
from runner.timing import TIMING
from runner.warm_pool import AGENT_DIR, WarmPool, WarmSandbox
from runner.workspace_state import SNAPSHOT_DEADLINE, is_small, pack_workspace
from runner.workspace_state import restore_workspace as restore_workspace  # re-exported
from wire import events
from wire import timing as wt
from wire.bridge_limits import Violation
from wire.events import Event

log = logging.getLogger("ash.runner")

SANDBOXES_DIR = "sandboxes"
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
StopListener = Callable[[str, str], None]
"""Told (session id, why) when a sandbox is stopped for breaking the bridge protocol; the
gateway pauses the session (at once between turns, after the turn during one)."""


@dataclass(frozen=True, slots=True)
class WorkspaceAccess:
    """A session's workspace as the host sees it, for the files API."""

    root: Path
    owner: tuple[int, int] | None
    """Who files written into it must belong to (the sandbox's agent), if anyone."""
    live: bool
    """A sandbox is running on it (else it is the workspace kept on disk)."""


@dataclass(eq=False)
class _Sandbox:
    spec: SandboxSpec
    info: SandboxInfo
    bridge: BridgeProcess
    client: BridgeClient
    busy: bool = False
    """A `send` owns the bridge: its turn, or its wait for the previous turn's drain."""
    draining: asyncio.Task[None] | None = None
    """An abandoned turn being interrupted and read to its `done`."""
    proxy: ModelProxy | None = None
    warm: bool = False
    """Served from the warm pool: its directory holds a copy of the agent folder."""

    @property
    def alive(self) -> bool:
        return not self.client.closed and self.bridge.process.returncode is None


class LocalBackend:
    """The `Backend` protocol with every sandbox a child process of this one."""

    _stop_listener: StopListener | None = None

    def __init__(
        self,
        data_dir: Path,
        *,
        settings: BridgeSettings | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 2.0,
        drain_timeout: float = 10.0,
        isolation: Isolation | None = None,
        model_upstream: ModelUpstream | None = None,
        warm_pool: int = 0,
        max_sandboxes: int = DEFAULT_MAX_SANDBOXES,
    ) -> None:
        """`settings` default to the host's ASH_BACKEND and ASH_MOCK_* variables, `isolation`
        to the one ASH_SANDBOX names (bwrap unless it says none); SandboxUnavailable if the
        host cannot provide it. `model_upstream` (default: the host's ANTHROPIC_API_KEY and
        ANTHROPIC_BASE_URL) is where sandboxes' model calls go, through the model proxy.
        `warm_pool`: sandboxes to keep started ahead of their sessions (bwrap only; they
        start with `start_warm_pool`). `max_sandboxes`: most live sandboxes at once, warm
        ones included; a create beyond it raises CapacityExceeded (the pool keeps fewer
        warm rather than push a session out)."""
        if max_sandboxes < 1:
            raise ValueError("max_sandboxes must be at least 1")
        self.max_sandboxes = max_sandboxes
        self._data_dir = Path(data_dir)
        self._upstream = model_upstream or ModelUpstream.from_env()
        self._settings = settings if settings is not None else BridgeSettings.from_env()
        self._isolation = isolation or create_isolation(mode_from_env(), self._data_dir)
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._drain_timeout = drain_timeout
        self._sandboxes: dict[str, _Sandbox] = {}
        self._starting: set[str] = set()
        self._pool: WarmPool | None = None
        if warm_pool > 0 and isinstance(self._isolation, BwrapIsolation):
            self._pool = WarmPool(min(warm_pool, max_sandboxes), self._isolation,
                                  self._data_dir / SANDBOXES_DIR, self._settings,
                                  ready_timeout=ready_timeout, stop_timeout=stop_timeout,
                                  room=self._has_room)
        elif warm_pool > 0:
            log.info("no warm pool: it needs the bwrap sandbox (--sandbox=%s)",
                     self._isolation.mode)

    def held(self) -> int:
        """Live sandboxes counted against `max_sandboxes`: sessions' (starting ones too)
        and the warm pool's (waiting or starting)."""
        sessions = sum(1 for sandbox in self._sandboxes.values() if sandbox.alive)
        pool = self._pool.stats() if self._pool is not None else None
        warm = pool.ready + pool.starting if pool is not None else 0
        return sessions + len(self._starting) + warm

    def _has_room(self) -> bool:
        return self.held() < self.max_sandboxes

    def _admit(self, spec: SandboxSpec, state: bytes | None) -> None:
        """Let a create in under the cap, or raise CapacityExceeded. Binding a warm sandbox
        adds none; at the cap, a warm one that does not fit this session is stopped to
        make room for it (a session outranks a spare)."""
        if self._has_room():
            return
        pool = self._pool
        if pool is not None and pool.stats().ready:
            if state is None and pool.fits(spec):
                return
            spare = pool.take()
            if spare is not None:
                pool.discard_later(spare)
                if self._has_room():
                    return
        raise CapacityExceeded(
            f"at capacity: {self.held()} of {self.max_sandboxes} sandboxes are live (warm "
            f"pool included); end a session or raise --max-sandboxes ({MAX_SANDBOXES_ENV})")

    def on_sandbox_stopped(self, listener: StopListener | None) -> None:
        """Call `listener` when a sandbox is stopped for breaking the bridge protocol (a turn
        that runs also ends with the `error`; between turns only the listener hears of it)."""
        self._stop_listener = listener

    def start_warm_pool(self) -> None:
        """Start filling the warm pool, if there is one (in the running event loop)."""
        if self._pool is not None:
            self._pool.start()

    # paths

    def sandbox_dir(self, session_id: str) -> Path:
        if not _SESSION_ID.fullmatch(session_id) or ".." in session_id:
            raise BackendError(f"invalid session id: {session_id!r}")
        return self._data_dir / SANDBOXES_DIR / session_id

    def workspace(self, session_id: str) -> Path:
        return self.sandbox_dir(session_id) / "workspace"

    # lifecycle

    async def create(
        self, session_id: str, agent: AgentSpec, *, state: bytes | None = None
    ) -> SandboxInfo:
        token = secrets.token_urlsafe(24) if self._upstream_for(agent) is not None else None
        spec = SandboxSpec(session_id, agent, self.sandbox_dir(session_id), self._settings,
                           model_token=token)
        if session_id in self._starting or self.is_alive(session_id):
            raise BackendError(f"session {session_id} already has a sandbox")
        self._admit(spec, state)
        self._starting.add(session_id)
        try:
            dead = self._sandboxes.pop(session_id, None)
            if dead is not None:
                await self._stop(dead)
            warm = await self._from_pool(spec) if state is None else None
            if warm is not None:
                self._sandboxes[session_id] = warm
                return warm.info
            restored = await self._isolation.prepare(spec, state)
            try:
                sandbox = await self._start(spec, restored)
            except BaseException:
                await self._isolation.release_workspace(spec)
                if not restored:
                    await self._isolation.remove(spec.sandbox_dir)
                raise
            self._sandboxes[session_id] = sandbox
            return sandbox.info
        finally:
            self._starting.discard(session_id)

    async def _start(self, spec: SandboxSpec, restored: bool) -> _Sandbox:
        """Spawn the bridge and wait for its `ready`; on any failure the bridge is gone."""
        bridge = await spawn_bridge(spec, self._isolation)
        client: BridgeClient | None = None

        def to_bridge(kind: str, payload: bytes) -> None:
            if client is not None:
                client.send(kind, payload)

        proxy = self._model_proxy(spec, to_bridge)
        try:
            client = await BridgeClient.connect(
                bridge.sock, proxy.on_frame if proxy is not None else None,
                limits=self._settings.limits,
                on_violation=self._violation_handler(spec.session_id, bridge))
            ready = await first_event(client, bridge, self._isolation, events.READY,
                                      self._ready_timeout)
        except BaseException:
            await discard_bridge(bridge, client, self._isolation)
            if proxy is not None:
                await proxy.close()
            raise
        return self._record(spec, bridge, client, proxy, ready, restored=restored)

    def _upstream_for(self, agent: AgentSpec) -> ModelUpstream | None:
        """Where the sandbox's model calls go: with the session's own anthropic credential,
        to the runner's upstream with that key; else with the runner's key, if it has one."""
        credential = agent.credential
        if credential is None or not credential.proxied:
            return self._upstream
        base_url = self._upstream.base_url if self._upstream is not None else base_url_from_env()
        return ModelUpstream(base_url, credential.key)

    def _model_proxy(self, spec: SandboxSpec,
                     to_bridge: Callable[[str, bytes], None]) -> ModelProxy | None:
        upstream = self._upstream_for(spec.agent)
        if upstream is None or spec.model_token is None:
            return None
        return ModelProxy(upstream, spec.model_token, to_bridge)

    @staticmethod
    def _record(spec: SandboxSpec, bridge: BridgeProcess, client: BridgeClient,
                proxy: ModelProxy | None, ready: Event, *, restored: bool,
                warm: bool = False) -> _Sandbox:
        said = orjson.loads(ready.data)  # JSON: the guard checked; the shape is the bridge's
        info = SandboxInfo(
            sandbox_id=f"sbx_{secrets.token_hex(8)}",
            session_id=spec.session_id,
            pid=bridge.pid,
            workspace=str(spec.workspace),
            restored=restored,
            agent_backend=str(said.get("backend", ""))[:64] if isinstance(said, dict) else "",
        )
        return _Sandbox(spec, info, bridge, client, proxy=proxy, warm=warm)

    async def _from_pool(self, spec: SandboxSpec) -> _Sandbox | None:
        """The session's sandbox from the warm pool, or None when it has none that fits: a
        session with a workspace here (cold resume) keeps it. A warm sandbox that fails to
        bind (its bridge died) is dropped and the next one tried."""
        pool = self._pool
        if pool is None or not pool.fits(spec):
            return None
        try:
            env = session_env(spec, sandboxed=True)
        except SandboxStartError:
            return None  # a bad agent `env`: the cold path says so
        while (warm := pool.take()) is not None:
            slot = warm.spec.session_id
            try:
                return await self._bind(pool, warm, spec, env)
            except SandboxStartError as exc:
                log.warning("warm sandbox %s could not serve session %s: %s",
                            slot, spec.session_id, exc)
        return None

    async def _bind(self, pool: WarmPool, warm: WarmSandbox, spec: SandboxSpec,
                    env: dict[str, str]) -> _Sandbox:
        """Bind `warm` to `spec`'s session; on any failure the sandbox is gone."""
        proxy = self._model_proxy(spec, warm.client.send)
        warm.client.set_model_handler(proxy.on_frame if proxy is not None else None)
        warm.client.set_violation_handler(self._violation_handler(spec.session_id, warm.bridge))
        try:
            ready = await pool.bind(warm, spec, env)
        except BaseException:
            if proxy is not None:
                await proxy.close()
            raise
        return self._record(spec, warm.bridge, warm.client, proxy, ready, restored=False,
                            warm=True)

    def _violation_handler(self, session_id: str, bridge: BridgeProcess) -> ViolationHandler:
        """Kill `bridge` the moment it breaks the protocol, and tell the stop listener (between
        turns nobody reads: no turn will say it)."""

        def stop(violation: Violation) -> None:
            kill_now(bridge)
            log.warning("session %s: bridge protocol violation (%s): sandbox stopped",
                        session_id, violation.rule)
            sandbox = self._sandboxes.get(session_id)
            if sandbox is not None and sandbox.bridge is bridge and self._stop_listener is not None:
                self._stop_listener(session_id, f"bridge protocol violation: {violation.message}")

        return stop

    def stop_reason(self, session_id: str) -> str | None:
        """Why the runner stopped the session's sandbox, if it did (a protocol violation)."""
        sandbox = self._sandboxes.get(session_id)
        violation = sandbox.client.violation if sandbox is not None else None
        return f"bridge protocol violation: {violation.message}" if violation else None

    def is_alive(self, session_id: str) -> bool:
        sandbox = self._sandboxes.get(session_id)
        return sandbox is not None and sandbox.alive

    async def destroy(self, session_id: str, *, keep_workspace: bool = False) -> None:
        sandbox_dir = self.sandbox_dir(session_id)
        sandbox = self._sandboxes.pop(session_id, None)
        if sandbox is not None:
            await self._stop(sandbox)
            if self._pool is not None:
                self._pool.wake()  # a slot under the cap may be free for a warm sandbox
        if not keep_workspace:
            await self._isolation.remove(sandbox_dir)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        sandboxes = list(self._sandboxes.values())
        self._sandboxes.clear()
        await asyncio.gather(*(self._stop(sandbox) for sandbox in sandboxes))
        await self._isolation.close()

    async def _stop(self, sandbox: _Sandbox) -> None:
        """Ask the bridge to shut down; kill it if it has not exited after `stop_timeout`."""
        if sandbox.draining is not None:
            sandbox.draining.cancel()
        sandbox.client.send(events.SHUTDOWN)
        await self._reap(sandbox.bridge)
        sandbox.client.close()
        if sandbox.proxy is not None:
            await sandbox.proxy.close()
        await self._isolation.release_bridge(sandbox.bridge)
        await self._isolation.release_workspace(sandbox.spec)
        if sandbox.warm:
            await asyncio.to_thread(shutil.rmtree, sandbox.spec.sandbox_dir / AGENT_DIR, True)

    async def _reap(self, bridge: BridgeProcess, *, kill: bool = False) -> int:
        """The bridge's exit code, once it has exited; it is killed at once with `kill`,
        else after `stop_timeout`."""
        return await reap(bridge, self._stop_timeout, kill=kill)

    # turns

    async def send(
        self, session_id: str, prompt: str, options: dict[str, Any] | None = None,
        *, turn_id: str = "",
    ) -> AsyncGenerator[Event, None]:
        """One turn's events, `done` last. One turn at a time per sandbox.

        A consumer that stops early (aclose, cancellation) leaves the turn to a
        background drain that interrupts it, so the next `send` starts clean.
        """
        request: dict[str, Any] = {"prompt": prompt, "options": options or {}}
        if turn_id:
            request["turn"] = turn_id
        try:
            query = orjson.dumps(request)
        except TypeError as exc:
            raise BackendError(f"message options are not JSON: {exc}") from exc
        sandbox = self._live(session_id)
        if sandbox.busy:
            raise BackendError("session busy")
        sandbox.busy = True
        turn_open = False
        first_pending = TIMING and bool(turn_id)
        try:
            if sandbox.draining is not None:
                await asyncio.wait({sandbox.draining})
                if not sandbox.alive:
                    raise SandboxGone(f"session {session_id} has no live sandbox")
            sandbox.client.send(events.QUERY, query)
            turn_open = True
            while turn_open:
                event = await sandbox.client.next_event()
                if event is None:
                    turn_open = False
                    violation = sandbox.client.violation
                    code = await self._reap(sandbox.bridge, kill=violation is not None)
                    yield (Event(events.ERROR, violation.payload()) if violation is not None
                           else self._exit_error(sandbox, code))
                    yield Event(events.DONE, events.done_payload(session_id, "error"))
                    return
                if first_pending and event.type in wt.TOKEN_EVENTS:
                    first_pending = False
                    timing.point(wt.RUNNER_FIRST_EVENT, turn_id, session_id)
                turn_open = event.type != events.DONE
                if not turn_open and (hit := self._isolation.limit_hit(sandbox.bridge)):
                    # A limit hit the turn survived (a full disk; an OOM kill the watcher
                    # has yet to act on): stop the sandbox so the session pauses, and say why.
                    await self._reap(sandbox.bridge, kill=True)
                    yield Event(events.ERROR, hit.payload())
                    yield Event(events.DONE, events.done_payload(session_id, "error"))
                    return
                yield event
        finally:
            sandbox.busy = False
            if turn_open and sandbox.alive:
                sandbox.draining = asyncio.get_running_loop().create_task(self._drain(sandbox))

    async def replay(self, session_id: str) -> AsyncGenerator[Event, None]:
        """In-process sandboxes never outlive the gateway: no turn is ever pending."""
        raise SandboxGone(f"session {session_id} has no turn to replay")
        yield  # an async generator, like `send`

    def acknowledge(self, hints: dict[str, int]) -> None:
        """Events from in-process sandboxes carry no hints: nothing is kept to forget."""

    def _exit_error(self, sandbox: _Sandbox, code: int) -> Event:
        """The `error` event for a bridge that died mid-turn: the limit it hit, if any."""
        hit = self._isolation.limit_hit(sandbox.bridge)
        if hit is not None:
            return Event(events.ERROR, hit.payload())
        return Event(events.ERROR, orjson.dumps({
            "error": f"sandbox exited unexpectedly (exit code {code})",
            "code": "sandbox_exited",
        }))

    async def _drain(self, sandbox: _Sandbox) -> None:
        """Interrupt an abandoned turn and read it to its `done`; a bridge that hangs is killed."""
        try:
            sandbox.client.send(events.INTERRUPT)
            async with asyncio.timeout(self._drain_timeout):
                while (event := await sandbox.client.next_event()) is not None:
                    if event.type == events.DONE:
                        return
        except TimeoutError:
            log.warning(
                "bridge for session %s ignored an interrupt for %g s; killing it",
                sandbox.info.session_id,
                self._drain_timeout,
            )
            await self._reap(sandbox.bridge, kill=True)
        finally:
            sandbox.draining = None

    async def interrupt(self, session_id: str) -> None:
        """Stop the running turn. A dead sandbox has nothing to stop: then this does nothing."""
        sandbox = self._sandboxes.get(session_id)
        if sandbox is not None and sandbox.alive:
            sandbox.client.send(events.INTERRUPT)

    async def exec(self, session_id: str, command: str, time_limit: float) -> ExecResult:
        sandbox = self._live(session_id)
        try:
            answer = await sandbox.client.exec(command, min(time_limit, EXEC_MAX_TIMEOUT))
        except ConnectionError as exc:
            raise SandboxGone(f"session {session_id}: {exc}") from exc
        except ExecTimeout as exc:
            raise BackendError(f"session {session_id}: {exc}") from exc
        return exec_result(session_id, answer)

    # state

    async def snapshot(self, session_id: str) -> bytes:
        """The session's workspace as a tar (`pack_workspace`: never redirected by the
        agent's links, bounded in entries, bytes, depth and time). The walk stops itself
        at its time budget; SNAPSHOT_DEADLINE, a little later, also covers mounting the
        workspace and a walk stuck in a system call."""
        sandbox_dir = self.sandbox_dir(session_id)
        try:
            async with asyncio.timeout(SNAPSHOT_DEADLINE), \
                    self._isolation.workspace(sandbox_dir) as workspace:
                if not workspace.is_dir():
                    raise SandboxGone(f"session {session_id} has no workspace here")
                if is_small(workspace):
                    # Packing a few small files (~0.6 ms) costs less than handing it to a
                    # thread and back, which waits for the GIL (~2 ms measured here).
                    return pack_workspace(workspace)
                return await asyncio.to_thread(pack_workspace, workspace)
        except TimeoutError:
            raise BackendError(f"snapshot of session {session_id} took longer than "
                               f"{SNAPSHOT_DEADLINE:g} s") from None
        except OSError as exc:
            raise BackendError(f"snapshot of session {session_id} failed: {exc}") from exc

    async def saved_state(self, session_id: str) -> bytes:
        """The workspace on this disk is the state, whether a sandbox runs on it or not."""
        return await self.snapshot(session_id)

    async def seed(self, session_id: str, agent: AgentSpec, state: bytes) -> None:
        """Restore `state` into the session's workspace now, so it is on disk like a stopped
        session's (a later `create` keeps it)."""
        spec = SandboxSpec(session_id, agent, self.sandbox_dir(session_id), self._settings)
        if session_id in self._starting or session_id in self._sandboxes:
            raise BackendError(f"session {session_id} already has a sandbox")
        await self._isolation.prepare(spec, state)
        await self._isolation.release_workspace(spec)

    @contextlib.asynccontextmanager
    async def open_workspace(self, session_id: str) -> AsyncIterator[WorkspaceAccess]:
        """The session's workspace on this disk, the live sandbox's or the one kept after it
        stopped (mounted for the context); SandboxGone when there is none."""
        sandbox_dir = self.sandbox_dir(session_id)
        try:
            async with self._isolation.workspace(sandbox_dir) as workspace:
                if not await asyncio.to_thread(workspace.is_dir):
                    raise SandboxGone(f"session {session_id} has no workspace here")
                yield WorkspaceAccess(workspace, self._isolation.owner,
                                      live=self.is_alive(session_id))
        except OSError as exc:
            raise BackendError(f"cannot open the workspace of {session_id}: {exc}") from exc

    async def logs(self, session_id: str, after: int, limit: int) -> LogPage:
        sandbox = self._sandboxes.get(session_id)
        if sandbox is not None and sandbox.bridge.log_pump is not None:
            sandbox.bridge.log_pump.drain()  # what the pipe holds now is in the answer
        return await asyncio.to_thread(read_log, self.sandbox_dir(session_id) / LOG_FILE,
                                       after, limit)

    def sandbox_status(self) -> dict[str, Any]:
        """How this backend isolates its sandboxes (for /health)."""
        return self._isolation.status()

    async def checkpoint(self, session_id: str) -> None:
        """The workspace already is the durable state: it lives on this process's disk."""

    async def wait_exit(self, session_id: str) -> None:
        """Return once the session's bridge has exited (at once if it has none)."""
        sandbox = self._sandboxes.get(session_id)
        if sandbox is not None:
            await sandbox.bridge.process.wait()

    def stats(self) -> BackendStats:
        live = [s for s in self._sandboxes.values() if s.alive]
        return BackendStats(
            sandboxes=len(live),
            busy=sum(1 for s in live if s.busy or s.draining is not None),
            pool=self._pool.stats() if self._pool is not None else None,
            capacity=self.max_sandboxes,
        )

    # for tests and operators

    def pid(self, session_id: str) -> int:
        """The bridge's pid (also for a bridge that has died)."""
        return self._sandbox(session_id).bridge.pid

    def kill(self, session_id: str, sig: int = signal.SIGKILL) -> None:
        """Signal the bridge (SIGKILL by default), as a crash or an OOM kill would."""
        with contextlib.suppress(ProcessLookupError):
            self._sandbox(session_id).bridge.process.send_signal(sig)

    def _sandbox(self, session_id: str) -> _Sandbox:
        sandbox = self._sandboxes.get(session_id)
        if sandbox is None:
            raise SandboxGone(f"session {session_id} has no sandbox")
        return sandbox

    def _live(self, session_id: str) -> _Sandbox:
        sandbox = self._sandboxes.get(session_id)
        if sandbox is None or not sandbox.alive:
            raise SandboxGone(f"session {session_id} has no live sandbox")
        return sandbox


def exec_result(session_id: str, answer: dict[str, Any]) -> ExecResult:
    """An `exec_result` payload (from the untrusted bridge), checked field by field."""
    exit_code, stdout, stderr = answer.get("exitCode"), answer.get("stdout"), answer.get("stderr")
    truncated, timed_out = answer.get("truncated"), answer.get("timedOut")
    if (not isinstance(exit_code, int) or isinstance(exit_code, bool)
            or not isinstance(stdout, str) or not isinstance(stderr, str)
            or not isinstance(truncated, bool) or not isinstance(timed_out, bool)):
        raise BackendError(f"session {session_id}: the sandbox answered exec with a "
                           "malformed result")
    return ExecResult(exit_code=exit_code, stdout=stdout.encode(), stderr=stderr.encode(),
                      truncated=truncated, timed_out=timed_out)
