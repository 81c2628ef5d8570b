"""Coordinator mode: no local sandboxes; each session lives on a registered runner.

`Coordinator` is the Backend the gateway codes against in this mode. It places
a new session on the least-loaded runner that is healthy and has free capacity
(the seed's rule), preferring the session's previous runner on a resume, and
routes every later call to that runner's `RemoteBackend`: one gRPC channel per
runner. It also owns the registry's gRPC listener and reacts to runners coming
and going (see `gateway.registry`).

A cold resume restores the session's state from the gateway's `StateStore`
(shipped there after every turn and on pause), so a session whose runner is
lost continues on any other one (Strategy A).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from gateway.agent_bundles import AgentBundles
from gateway.registry import Registry, RunnerState
from gateway.remote_backend import TURN_RPC_SESSION, RemoteBackend, RunnerUnavailable
from gateway.remote_files import RemoteFiles
from gateway.state_store import DEFAULT_MAX_BYTES, StateStore
from gateway.store import Store
from gateway.stored_files import edit_state
from runner.backend import (
    AgentSpec,
    BackendError,
    BackendStats,
    CapacityExceeded,
    ExecResult,
    SandboxGone,
    SandboxInfo,
)
from runner.bridge_log import LogPage
from runner.grpc_transport import (
    REGISTRY_MAX_MESSAGE_BYTES,
    add_listener,
    join_address,
    server_options,
)
from runner.workspace_files import TooLarge
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc
from wire.events import Event
from wire.internal_auth import SecretCheck

log = logging.getLogger("ash.coordinator")

REGISTRY_SERVICE = "ash.runner.v1.RunnerRegistry"
T = TypeVar("T")


class NoRunnerAvailable(BackendError):
    """No registered runner can take a new sandbox now."""


class RunnersFull(NoRunnerAvailable, CapacityExceeded):
    """Runners are up and accepting, but each holds its most sandboxes (the sessions
    service then frees an idle sandbox, if there is one, and tries again)."""


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    secret: str
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 4101
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    """CA that signed the runners' certificates; given, the gateway reaches them over TLS."""
    heartbeat_interval: float = 10.0
    """For runners that ask for none, and the grace for runners known before a restart."""
    state_max_bytes: int = DEFAULT_MAX_BYTES
    state_fsync: bool = False
    turn_rpc: str = TURN_RPC_SESSION
    grpc_max_message_bytes: int = REGISTRY_MAX_MESSAGE_BYTES
    """The registry listener's receive limit (its messages are small)."""
    gateway_id: str = "ash-gateway"


class Coordinator:
    def __init__(self, store: Store, data_dir: Path, settings: CoordinatorSettings) -> None:
        self._store = store
        self._states = StateStore(Path(data_dir) / "state", max_bytes=settings.state_max_bytes,
                                  fsync=settings.state_fsync)
        self._settings = settings
        self._bundles = AgentBundles()
        self._clients: dict[str, RemoteBackend] = {}
        self._placement: dict[str, str] = {}
        """Session id -> runner id, for the sessions with a sandbox placed by this process."""
        self._placing: set[str] = set()
        self._server: grpc.aio.Server | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.registry = Registry(store, self, default_interval=settings.heartbeat_interval,
                                 gateway_id=settings.gateway_id)
        self.on_unfinished_turn: Callable[[str], None] | None = None
        """Told of each session whose runner reports a turn the log lacks the end of
        (it ran on while no gateway was attached): the session service takes it over."""
        self._unfinished: dict[str, list[str]] = {}
        """Such sessions by runner, until the runner's heartbeat stream is up."""
        self._stop_listener: Callable[[str, str], None] | None = None
        self._edit_locks: dict[str, asyncio.Lock] = {}

    def on_sandbox_stopped(self, listener: Callable[[str, str], None] | None) -> None:
        """Call `listener` (session id, why) when a runner reports a session's sandbox
        exited (its bridge broke the protocol, a limit killed it)."""
        self._stop_listener = listener

    def _sandbox_stopped(self, session_id: str, reason: str) -> None:
        if self._stop_listener is not None:
            self._stop_listener(session_id, reason)

    async def start(self) -> str:
        """Open the registry's gRPC listener and start the liveness sweep; its address."""
        settings = self._settings
        server = grpc.aio.server(interceptors=[SecretCheck(settings.secret)],
                                 options=server_options(settings.grpc_max_message_bytes))
        pb_grpc.add_RunnerRegistryServicer_to_server(self.registry, server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = add_listener(server, join_address(settings.grpc_host, settings.grpc_port),
                            settings.certfile, settings.keyfile)
        await server.start()
        await health.set(REGISTRY_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self.registry.start()
        return join_address(settings.grpc_host, port)

    # runners coming and going (RegistryListener)

    def runner_registered(self, runner: RunnerState, held: Sequence[str],
                          unfinished: Sequence[pb.UnfinishedTurn] = ()) -> list[str]:
        client = self._clients.get(runner.id)
        if client is None or client.target != runner.address or not client.accepting:
            if client is not None:
                client.lost("it registered again")
            self._clients[runner.id] = RemoteBackend(
                runner.id, runner.address, secret=self._settings.secret, states=self._states,
                bundles=self._bundles, cafile=self._settings.cafile,
                turn_rpc=self._settings.turn_rpc,
            )
            self._clients[runner.id].stop_listener = self._sandbox_stopped
        release = [sid for sid in held if not self._routes_to(sid, runner.id)]
        self._unfinished[runner.id] = [
            turn.session_id for turn in unfinished
            if turn.session_id not in release and turn.session_id not in self._placement
            and (turn.running or turn.last_seq_hint > self._logged_hint(turn.session_id))]
        return release

    def _logged_hint(self, session_id: str) -> int:
        row = self._store.get_session(session_id)
        return row.runner_hint if row is not None else 0

    def runner_connected(self, runner_id: str) -> None:
        unfinished = self._unfinished.pop(runner_id, [])
        if self.on_unfinished_turn is not None:
            for session_id in unfinished:
                self.on_unfinished_turn(session_id)

    def _routes_to(self, session_id: str, runner_id: str) -> bool:
        """Whether the session may keep a sandbox on the runner: it is routed there, or
        is being placed right now (its row does not say where yet)."""
        if session_id in self._placing:
            return True
        row = self._store.get_session(session_id)
        return row is not None and row.status != "ended" and row.runner_id == runner_id

    def runner_lost(self, runner_id: str, reason: str) -> None:
        client = self._clients.pop(runner_id, None)
        if client is not None:
            client.lost(reason)

    def runner_left(self, runner_id: str) -> None:
        """Its running turns finish where they are; it is no candidate for anything new."""
        client = self._clients.get(runner_id)
        if client is not None:
            client.retire()

    # placement

    def _candidates(self, prefer: str | None) -> list[RemoteBackend]:
        """Runners that may take a sandbox: `prefer` first, then least loaded first."""
        ranked: list[tuple[bool, int, str, RemoteBackend]] = []
        for runner in self.registry.runners():
            client = self._clients.get(runner.id)
            if not runner.accepting or client is None or not client.accepting:
                continue
            load = max(runner.active, client.placed)
            if load < runner.max_sandboxes:
                ranked.append((runner.id != prefer, load, runner.id, client))
        ranked.sort(key=lambda entry: entry[:3])
        return [entry[3] for entry in ranked]

    def _any_accepting(self) -> bool:
        """Some runner would take sandboxes if it had room (so none has room)."""
        for runner in self.registry.runners():
            client = self._clients.get(runner.id)
            if runner.accepting and client is not None and client.accepting:
                return True
        return False

    def _why_none(self) -> str:
        runners = self.registry.runners()
        connected = [r for r in runners if r.link is not None]
        if not connected:
            return "no runner available: none is registered and connected"
        states = ", ".join(
            f"{r.id} {r.status if r.status != 'healthy' else 'full'}" for r in connected
        )
        return (f"no runner available: {len(connected)} connected, none healthy with free "
                f"capacity ({states})")

    def runner_sessions(self, runner_id: str) -> int:
        """Sandboxes this gateway holds on the runner."""
        client = self._clients.get(runner_id)
        return client.placed if client is not None else 0

    # Backend

    async def create(
        self, session_id: str, agent: AgentSpec, *, state: bytes | None = None
    ) -> SandboxInfo:
        """Place the session (its previous runner first, if it can take it) and start it.

        Without `state`, the state stored for the session (if any) is restored.
        """
        row = self._store.get_session(session_id)
        previous = row.runner_id if row is not None else None
        candidates = self._candidates(previous)
        if not candidates:
            raise (RunnersFull if self._any_accepting() else NoRunnerAvailable)(
                self._why_none())
        if state is None:
            state = await self._states.load(session_id)
        refusals: list[str] = []
        self._placing.add(session_id)
        try:
            for client in candidates:
                resume_after = row.runner_hint if row is not None else 0
                try:
                    info = await client.create(session_id, agent, state=state,
                                               resume_after=resume_after)
                except RunnerUnavailable as exc:
                    refusals.append(str(exc))
                    continue
                self._placement[session_id] = client.runner_id
                if previous is not None and previous != client.runner_id:
                    self._release(previous, session_id)
                return info
        finally:
            self._placing.discard(session_id)
        raise NoRunnerAvailable(f"no runner could take the session: {'; '.join(refusals)}")

    def _release(self, runner_id: str, session_id: str) -> None:
        """The session moved: drop what its old runner may still hold of it."""
        client = self._clients.get(runner_id)
        if client is None:
            return
        task = asyncio.get_running_loop().create_task(client.destroy(session_id))
        self._background.add(task)
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not release a moved session: %s", task.exception())

    def _client(self, session_id: str) -> RemoteBackend | None:
        runner_id = self._placement.get(session_id)
        return self._clients.get(runner_id) if runner_id is not None else None

    def is_alive(self, session_id: str) -> bool:
        client = self._client(session_id)
        return client is not None and client.is_alive(session_id)

    def send(
        self, session_id: str, prompt: str, options: dict[str, Any] | None = None,
        *, turn_id: str = "",
    ) -> AsyncGenerator[Event, None]:
        client = self._client(session_id)
        if client is None:
            return _no_sandbox(session_id)
        return client.send(session_id, prompt, options, turn_id=turn_id)

    def replay(self, session_id: str) -> AsyncGenerator[Event, None]:
        client = self._client(session_id)
        if client is None:
            return _no_sandbox(session_id)
        return client.replay(session_id)

    def acknowledge(self, hints: dict[str, int]) -> None:
        by_client: dict[str, dict[str, int]] = {}
        for session_id, hint in hints.items():
            runner_id = self._placement.get(session_id)
            if runner_id is not None:
                by_client.setdefault(runner_id, {})[session_id] = hint
        for runner_id, client_hints in by_client.items():
            client = self._clients.get(runner_id)
            if client is not None:
                client.acknowledge(client_hints)

    async def interrupt(self, session_id: str) -> None:
        client = self._client(session_id)
        if client is not None:
            await client.interrupt(session_id)

    async def exec(self, session_id: str, command: str, time_limit: float) -> ExecResult:
        return await self._live_client(session_id).exec(session_id, command, time_limit)

    async def destroy(self, session_id: str, *, keep_workspace: bool = False) -> None:
        runner_id = self._placement.pop(session_id, None)
        if runner_id is None:
            row = self._store.get_session(session_id)
            runner_id = row.runner_id if row is not None else None
        client = self._clients.get(runner_id) if runner_id is not None else None
        if client is not None:
            was_live = client.is_alive(session_id)
            await client.destroy(session_id, keep_workspace=keep_workspace)
            runner = self.registry.get(client.runner_id)
            if was_live and runner is not None and runner.active > 0:
                # The slot is free now, not at the runner's next heartbeat: a create
                # that freed an idle sandbox to make room may be placed there at once.
                runner.active -= 1
        if not keep_workspace:
            self._states.delete(session_id)

    async def snapshot(self, session_id: str) -> bytes:
        return await self._live_client(session_id).snapshot(session_id)

    async def checkpoint(self, session_id: str) -> None:
        client = self._client(session_id)
        if client is not None:
            await client.checkpoint(session_id)

    async def saved_state(self, session_id: str) -> bytes:
        """A snapshot of the live sandbox, else the state its runner last shipped here."""
        if self.is_alive(session_id):
            return await self._live_client(session_id).snapshot(session_id)
        state = await self._states.load(session_id)
        if state is None:
            raise SandboxGone(f"session {session_id} has no saved state")
        return state

    async def seed(self, session_id: str, agent: AgentSpec, state: bytes) -> None:
        """Store `state` where `create` looks for a session's state: any runner restores it."""
        await self._states.save(session_id, state)

    async def stored_state(self, session_id: str) -> bytes | None:
        """The state the session's runner last shipped (a gzip tar of its workspace), if any."""
        return await self._states.load(session_id)

    def live_files(self, session_id: str) -> RemoteFiles | None:
        """The files rpcs of the session's live sandbox; None when it has none."""
        client = self._client(session_id)
        if client is None or not client.is_alive(session_id):
            return None
        return client.files(session_id)

    def edit_lock(self, session_id: str) -> asyncio.Lock:
        """Held around each `edit_stored_state` of the session: edits go one at a time."""
        return self._edit_locks.setdefault(session_id, asyncio.Lock())

    async def edit_stored_state(self, session_id: str, edit: Callable[[Path], T]) -> T:
        """Apply `edit` to the session's stored state (no sandbox is live; the caller holds
        `edit_lock`), so the next resume restores the edited tree; SandboxGone when none
        is stored. A sandbox the session's runner may still hold (this gateway restarted
        since) is dropped first: a resume would attach to it, not restore the edit."""
        state = await self._states.load(session_id)
        if state is None:
            raise SandboxGone(f"session {session_id} has no stored state")
        await self._drop_held_sandbox(session_id)
        edited, result = await asyncio.to_thread(edit_state, state, self._states.root, edit)
        if len(edited) > self._states.max_bytes:
            raise TooLarge(f"the edited session state is {len(edited)} bytes, over the "
                           f"{self._states.max_bytes}-byte limit (ASH_STATE_MAX_BYTES)")
        await self._states.save(session_id, edited)
        return result

    async def _drop_held_sandbox(self, session_id: str) -> None:
        row = self._store.get_session(session_id)
        client = self._clients.get(row.runner_id) if row is not None and row.runner_id else None
        unfinished = any(session_id in ids for ids in self._unfinished.values())
        if client is not None and not client.is_alive(session_id) and not unfinished:
            with contextlib.suppress(BackendError):
                await client.destroy(session_id, keep_workspace=True)

    def stats(self) -> BackendStats:
        totals = [client.stats() for client in self._clients.values()]
        capacity = sum(runner.max_sandboxes for runner in self.registry.runners()
                       if runner.accepting and runner.id in self._clients)
        return BackendStats(sandboxes=sum(s.sandboxes for s in totals),
                            busy=sum(s.busy for s in totals), capacity=capacity)

    async def close(self) -> None:
        """Stop the registry and drop the channels; runners keep their sandboxes."""
        await self.registry.close()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(client.close() for client in clients))

    async def logs(self, session_id: str, after: int, limit: int) -> LogPage:
        """From the runner that holds, or last held, the session's sandbox (a stopped
        session's directory stays there); none when that runner is not connected."""
        client = self._client(session_id)
        if client is None:
            row = self._store.get_session(session_id)
            runner_id = row.runner_id if row is not None else None
            client = self._clients.get(runner_id) if runner_id is not None else None
        if client is None:
            return LogPage()
        return await client.logs(session_id, after, limit)

    def _live_client(self, session_id: str) -> RemoteBackend:
        client = self._client(session_id)
        if client is None:
            raise SandboxGone(f"session {session_id} has no live sandbox")
        return client


async def _no_sandbox(session_id: str) -> AsyncGenerator[Event, None]:
    raise SandboxGone(f"session {session_id} has no live sandbox")
    yield  # an async generator, like every other `send`
