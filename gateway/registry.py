"""The runner registry: the `RunnerRegistry` gRPC service and the liveness sweep.

A runner calls Register, then holds one Heartbeat stream open: capacity comes
up every interval and is acknowledged; commands (`drain`) go down. The runner
is lost when that stream breaks or when no heartbeat arrives for
`MISSED_HEARTBEATS` intervals; a lost runner's active sessions are paused in one
statement and its in-flight turns end with a `runner lost` error (the
coordinator's part). A runner that deregisters (a heartbeat marked `leaving`)
gets the same pause at once, without waiting for the sweep.

The runners table mirrors this state for `GET /api/runners` and restarts:
after a gateway restart every known runner is `disconnected` until it registers
again, and lost if it does not within three intervals (`RESTART_GRACE` at least).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from gateway.store import Store
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc

log = logging.getLogger("ash.registry")

HEALTHY = "healthy"
DRAINING = "draining"
DISCONNECTED = "disconnected"
"""Known from before a gateway restart; not registered again yet."""
LOST = "lost"
GONE = "gone"
"""Deregistered: shut down cleanly."""
_WATCHED = (HEALTHY, DRAINING, DISCONNECTED)

MISSED_HEARTBEATS = 3
RESTART_GRACE = 10.0
"""Least time a runner known from before a gateway restart gets to register again (it
reconnects with backoff), before its sessions are paused."""
MIN_INTERVAL = 0.1
MAX_INTERVAL = 300.0
_RUNNER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class RegistryListener(Protocol):
    """What the coordinator does when a runner comes or goes."""

    def runner_registered(self, runner: RunnerState, held: Sequence[str],
                          unfinished: Sequence[pb.UnfinishedTurn] = ()) -> list[str]:
        """`held`: sessions whose sandbox the runner has; returns those it should drop.
        `unfinished`: of those, the ones with a running turn or unacknowledged events."""
        ...

    def runner_connected(self, runner_id: str) -> None:
        """Its heartbeat stream is up: it can take work."""
        ...

    def runner_lost(self, runner_id: str, reason: str) -> None: ...

    def runner_left(self, runner_id: str) -> None: ...


@dataclass(eq=False)
class _Link:
    """A runner's open Heartbeat stream; writes to it are serialised."""

    context: grpc.aio.ServicerContext
    generation: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, response: pb.HeartbeatResponse) -> None:
        async with self.lock:
            await self.context.write(response)


@dataclass(eq=False)
class RunnerState:
    id: str
    host: str
    port: int
    max_sandboxes: int
    interval: float
    status: str
    registered_at: float
    last_heartbeat: float
    """Wall clock of the last sign of life (registration or heartbeat)."""
    last_seen: float
    """Monotonic clock of the same, for the sweep."""
    active: int = 0
    warming: int = 0
    generation: int = 0
    link: _Link | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def accepting(self) -> bool:
        """Healthy, connected, not draining: may get new sessions."""
        return self.status == HEALTHY and self.link is not None


def _ack() -> pb.HeartbeatResponse:
    return pb.HeartbeatResponse(ack=pb.Ack(server_time_unix_ms=int(time.time() * 1000)))


class Registry(pb_grpc.RunnerRegistryServicer):
    def __init__(self, store: Store, listener: RegistryListener, *,
                 default_interval: float = 10.0, gateway_id: str = "") -> None:
        self._store = store
        self._listener = listener
        self.default_interval = default_interval
        self._gateway_id = gateway_id
        self._runners: dict[str, RunnerState] = {}
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.heartbeats = 0
        """Heartbeats received, and runners lost, since start (`gateway.metrics`)."""
        self.lost = 0
        self._recall()

    def _recall(self) -> None:
        """Runners from before a restart: disconnected until they register again."""
        now = time.monotonic()
        for row in self._store.list_runners():
            status = DISCONNECTED if row.status in _WATCHED else row.status
            if status != row.status:
                self._store.set_runner_status(row.id, status)
            self._runners[row.id] = RunnerState(
                id=row.id, host=row.host, port=row.port, max_sandboxes=row.max_sandboxes,
                interval=self.default_interval, status=status, registered_at=row.registered_at,
                last_heartbeat=row.last_heartbeat, last_seen=now, active=row.active,
                warming=row.warming,
            )

    # queries

    def runners(self) -> list[RunnerState]:
        return sorted(self._runners.values(), key=lambda r: r.id)

    def get(self, runner_id: str) -> RunnerState | None:
        return self._runners.get(runner_id)

    # RunnerRegistry service

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        problem = _invalid_registration(request)
        if problem:
            log.warning("refused registration of %r: %s", request.runner_id, problem)
            return pb.RegisterResponse(accepted=False, reason=problem)
        requested = request.heartbeat_interval_ms / 1000 or self.default_interval
        interval = min(MAX_INTERVAL, max(MIN_INTERVAL, requested))
        status = DRAINING if request.draining else HEALTHY
        row = self._store.upsert_runner(request.runner_id, request.host, request.port,
                                        request.max_sandboxes, status)
        previous = self._runners.get(request.runner_id)
        runner = RunnerState(
            id=row.id, host=row.host, port=row.port, max_sandboxes=row.max_sandboxes,
            interval=interval, status=status, registered_at=row.registered_at,
            last_heartbeat=row.last_heartbeat, last_seen=time.monotonic(),
            generation=(previous.generation + 1) if previous else 1,
        )
        self._runners[runner.id] = runner
        log.info("runner %s registered at %s (%d sandboxes max, heartbeat %g s)",
                 runner.id, runner.address, runner.max_sandboxes, interval)
        release = self._listener.runner_registered(runner, request.session_ids,
                                                   request.unfinished_turns)
        return pb.RegisterResponse(accepted=True, heartbeat_interval_ms=round(interval * 1000),
                                   gateway_id=self._gateway_id, release_session_ids=release)

    async def Heartbeat(self, request_iterator: object,
                        context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        runner = self._runners.get(first.runner_id)
        if runner is None or runner.status not in (HEALTHY, DRAINING):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "unknown or lost runner: register first")
        link = _Link(context, runner.generation)
        runner.link = link
        self._listener.runner_connected(runner.id)
        try:
            message = first
            while message is not grpc.aio.EOF:
                if runner.generation != link.generation:
                    await context.abort(grpc.StatusCode.ABORTED,
                                        "superseded by a newer registration")
                if runner.status not in (HEALTHY, DRAINING):
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                        f"runner is {runner.status}: register again")
                self._beat(runner, message)
                await link.send(_ack())
                message = await context.read()
        finally:
            if runner.link is link:
                runner.link = None
                if not self._closing and runner.status in (HEALTHY, DRAINING):
                    self._lose(runner, "heartbeat stream broke")

    def _beat(self, runner: RunnerState, message: pb.HeartbeatRequest) -> None:
        self.heartbeats += 1
        runner.last_seen = time.monotonic()
        runner.last_heartbeat = time.time()
        runner.active = message.capacity.active
        runner.warming = message.capacity.warming
        self._store.record_heartbeat(runner.id, runner.active, runner.warming)
        if message.leaving:
            self._leave(runner)

    # state changes

    def drain(self, runner_id: str, reason: str = "") -> RunnerState | None:
        """Place no new sessions on the runner, and tell it so; None if it is unknown."""
        runner = self._runners.get(runner_id)
        if runner is None:
            return None
        if runner.status == HEALTHY:
            runner.status = DRAINING
            self._store.set_runner_status(runner.id, DRAINING)
            log.info("runner %s draining: %s", runner.id, reason or "no reason given")
        if runner.link is not None:
            self._spawn(runner.link.send(pb.HeartbeatResponse(drain=pb.Drain(reason=reason))))
        return runner

    def _leave(self, runner: RunnerState) -> None:
        if runner.status == GONE:
            return
        runner.status = GONE
        self._store.set_runner_status(runner.id, GONE)
        paused = self._store.pause_runner_sessions(runner.id, f"runner {runner.id} shut down")
        log.info("runner %s deregistered: paused %d session(s)", runner.id, paused)
        self._listener.runner_left(runner.id)

    def _lose(self, runner: RunnerState, reason: str) -> None:
        if runner.status in (LOST, GONE):
            return
        runner.status = LOST
        self.lost += 1
        self._store.set_runner_status(runner.id, LOST)
        paused = self._store.pause_runner_sessions(runner.id, f"runner {runner.id} lost: {reason}")
        log.warning("runner %s lost (%s): paused %d session(s)", runner.id, reason, paused)
        self._listener.runner_lost(runner.id, reason)

    # liveness sweep

    def sweep(self) -> None:
        """Lose every watched runner silent for more than `MISSED_HEARTBEATS` intervals."""
        now = time.monotonic()
        for runner in list(self._runners.values()):
            silent = now - runner.last_seen
            limit = MISSED_HEARTBEATS * runner.interval
            if runner.status == DISCONNECTED:
                limit = max(limit, RESTART_GRACE)
            if runner.status in _WATCHED and silent > limit:
                self._lose(runner, f"no heartbeat for {silent:.1f} s")

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            watched = [r.interval for r in self._runners.values() if r.status in _WATCHED]
            await asyncio.sleep(max(0.05, min(watched, default=self.default_interval) / 2))
            self.sweep()

    async def close(self) -> None:
        """Stop watching; streams that end from now on are the gateway's doing."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _invalid_registration(request: pb.RegisterRequest) -> str | None:
    if not _RUNNER_ID.fullmatch(request.runner_id):
        return "runner_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
    if not request.host:
        return "host is required"
    if not 0 < request.port < 65536:
        return f"port {request.port} is out of range"
    if request.max_sandboxes < 1:
        return "max_sandboxes must be at least 1"
    return None
