"""The runner's gRPC service: the `Runner` API of wire/runner.proto over `LocalBackend`.

The same runner library that standalone mode embeds does the work; this module
only translates. The hot path is the per-session `Session` stream, opened once
when the gateway creates (or restores) the sandbox: a `query` on it goes straight
to the bridge, and each bridge event goes back as one message whose payload is
the bridge's bytes, untouched. After a turn's last agent event the session's
state (its workspace, conversation files included) follows as `state` chunks,
then `done`: the gateway makes the state durable before its client sees `done`.

One write is in flight per stream at a time (gRPC's rule): events the bridge
produces meanwhile go out together in the next message (`SessionEvent.more`),
so a burst costs one message, a lone event waits for nothing, and at most
`MAX_COALESCED` events wait: a gateway that reads slowly stalls this session's
bridge through gRPC flow control, never memory (see `runner.turn_relay`).

A turn belongs to the sandbox, not to the stream: it runs in the session's
`TurnRelay`, which numbers its events (`seq_hint`) and keeps those the gateway
has not acknowledged as logged. A gateway that crashes or restarts mid-turn
leaves the turn running; the next gateway's stream gets the rest of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from runner import timing
from runner.agent_cache import AgentCache
from runner.backend import (
    AgentSpec,
    BackendError,
    CapacityExceeded,
    SandboxGone,
    SandboxInfo,
    SandboxStartError,
)
from runner.bridge_log import MAX_LINES
from runner.grpc_files import FilesService
from runner.grpc_transport import add_listener, runner_max_message_bytes, server_options
from runner.local import LocalBackend
from runner.timing import TIMING
from runner.turn_relay import Sink, TurnRelay, Write
from wire import events
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc
from wire import timing as wt
from wire.credentials import check_credential
from wire.internal_auth import SecretCheck

log = logging.getLogger("ash.runner")

SERVICE_NAME = "ash.runner.v1.Runner"
STATE_CHUNK_BYTES = 1024 * 1024
SHUTTING_DOWN = "runner is shutting down"
_READY = pb.SessionEvent(type=events.READY)


def _ready(pending_turns: int) -> pb.SessionEvent:
    if not pending_turns:
        return _READY
    return pb.SessionEvent(type=events.READY,
                           data=orjson.dumps({"pendingTurns": pending_turns}))


def _done_after_error(session_id: str) -> pb.SessionEvent:
    return pb.SessionEvent(type=events.DONE, data=events.done_payload(session_id, "error"))


def error_message(message: str, code: str) -> pb.SessionEvent:
    return pb.SessionEvent(type=events.ERROR, data=orjson.dumps({"error": message, "code": code}))


@dataclass(frozen=True, slots=True)
class _End:
    """Tells a Session stream to finish with this status."""

    code: grpc.StatusCode
    details: str = ""
    after_turn: bool = True
    """Let the running turn finish on the stream first. Not when the stream broke or a
    newer one took over: the turn then goes on in its relay without this stream."""


_Inbox = asyncio.Queue[_End]



class RunnerService(pb_grpc.RunnerServicer):
    def __init__(
        self,
        backend: LocalBackend,
        agents: AgentCache,
        max_sandboxes: int,
        health: health_aio.HealthServicer | None = None,
    ) -> None:
        self.backend = backend
        self.agents = agents
        self.max_sandboxes = max_sandboxes
        self.health = health
        self.draining = False
        """Told by the gateway to take no new sandboxes; existing sessions go on."""
        self.leaving = False
        """Shutting down: no new sandboxes or turns; streams end after their turn."""
        self._sandboxes: dict[str, SandboxInfo] = {}
        self._inboxes: dict[str, _Inbox] = {}
        self._relays: dict[str, TurnRelay] = {}
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self._releasing: set[asyncio.Task[None]] = set()
        self._files = FilesService(backend)

    # admission and shutdown

    def drain(self, reason: str) -> None:
        if not self.draining:
            log.info("draining: no new sandboxes (%s)", reason or "no reason given")
        self.draining = True

    async def leave(self) -> None:
        """Stop taking work; every Session stream ends once its running turn is done."""
        self.leaving = self.draining = True
        if self.health is not None:
            await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        for inbox in self._inboxes.values():
            inbox.put_nowait(_End(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN))

    async def finish_turns(self, grace: float, interrupt_wait: float = 5.0) -> None:
        """Wait up to `grace` seconds for running turns, then interrupt what still runs;
        return when every Session stream has ended (or `interrupt_wait` more seconds)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._no_streams.wait()
        for session_id in list(self._inboxes):
            await self.backend.interrupt(session_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interrupt_wait):
                await self._no_streams.wait()

    def live_sessions(self) -> list[str]:
        return [sid for sid in self._sandboxes if self.backend.is_alive(sid)]

    def unfinished_turns(self) -> list[pb.UnfinishedTurn]:
        """Sessions with a running turn, or events kept that no gateway acknowledged."""
        return [pb.UnfinishedTurn(session_id=sid, last_seq_hint=relay.last_hint,
                                  running=relay.running)
                for sid, relay in self._relays.items()
                if relay.unfinished and self.backend.is_alive(sid)]

    def _relay(self, session_id: str) -> TurnRelay:
        relay = self._relays.get(session_id)
        if relay is None:
            relay = TurnRelay(session_id, lambda: self.backend.interrupt(session_id))
            self._relays[session_id] = relay
        return relay

    async def _forget_turns(self, session_id: str) -> None:
        relay = self._relays.pop(session_id, None)
        if relay is not None:
            await relay.close()

    def release(self, session_ids: Sequence[str]) -> None:
        """The gateway routes these sessions elsewhere now: drop their sandboxes and
        workspaces, in the background (registration must not wait for it)."""
        if session_ids:
            task = asyncio.get_running_loop().create_task(self._release(list(session_ids)))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release(self, session_ids: list[str]) -> None:
        for session_id in session_ids:
            log.info("releasing session %s: the gateway no longer routes it here", session_id)
            self._sandboxes.pop(session_id, None)
            await self._forget_turns(session_id)
            try:
                await self.backend.destroy(session_id)
            except BackendError as exc:
                log.warning("could not release session %s: %s", session_id, exc)

    def capacity(self) -> pb.Capacity:
        """`warming`: the warm pool's sandboxes ready for a session (not those starting)."""
        stats = self.backend.stats()
        return pb.Capacity(active=stats.sandboxes,
                           warming=stats.pool.ready if stats.pool is not None else 0,
                           max=self.max_sandboxes)

    # sandboxes

    async def CreateSandbox(
        self, request: pb.CreateSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSandboxResponse:
        session_id = request.session_id
        known = self._sandboxes.get(session_id)
        if known is not None and self.backend.is_alive(session_id):
            return _created(known, attached=True)
        if self.leaving:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        if self.draining:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "runner is draining: it takes no new sandboxes")
        try:
            await self._forget_turns(session_id)
            agent = await self._agent(request)
            state = request.state if request.HasField("state") else None
            info = await self.backend.create(session_id, agent, state=state)
        except BackendError as exc:
            await _fail(context, exc)
        self._sandboxes[session_id] = info
        return _created(info, attached=False)

    async def _agent(self, request: pb.CreateSandboxRequest) -> AgentSpec:
        try:
            config = orjson.loads(request.agent_config_json or b"{}")
        except orjson.JSONDecodeError as exc:
            raise BackendError(f"agent config is not JSON: {exc}") from exc
        source = request.WhichOneof("agent_source")
        if source == "agent_bundle":
            folder = await self.agents.folder(
                request.agent_name, request.agent_version, request.agent_bundle
            )
        elif source == "agent_path":
            folder = Path(request.agent_path)
        else:
            raise BackendError("CreateSandbox names no agent folder")
        version = int(request.agent_version) if request.agent_version.isdigit() else 1
        credential = None
        if request.HasField("credential"):
            try:
                credential = check_credential(request.credential.type, request.credential.key)
            except ValueError as exc:
                raise BackendError(f"CreateSandbox credential: {exc}") from None
        return AgentSpec(request.agent_name, str(folder), version, config, credential)

    async def DestroySandbox(
        self, request: pb.DestroySandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.DestroySandboxResponse:
        known = self._sandboxes.pop(request.session_id, None) is not None
        await self._forget_turns(request.session_id)
        try:
            await self.backend.destroy(request.session_id, keep_workspace=request.keep_workspace)
        except BackendError as exc:
            await _fail(context, exc)
        return pb.DestroySandboxResponse(destroyed=known)

    # turns

    async def Session(
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("command") != "open":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "the first command on a Session stream must be `open`")
        session_id, state_max = first.open.session_id, first.open.state_max_bytes
        if not self.backend.is_alive(session_id):
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"session {session_id} has no live sandbox here")
        inbox: _Inbox = asyncio.Queue()
        superseded = self._inboxes.get(session_id)
        if superseded is not None:
            superseded.put_nowait(_End(grpc.StatusCode.ABORTED, "a newer stream took over",
                                       after_turn=False))
        self._inboxes[session_id] = inbox
        self._no_streams.clear()
        if self.leaving:
            inbox.put_nowait(_End(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN))
        loop = asyncio.get_running_loop()
        relay = self._relay(session_id)
        timed = _TimedWrite(context.write, session_id) if TIMING else None
        write: Write = context.write if timed is None else timed
        reader = loop.create_task(self._read_commands(
            context, session_id, inbox, relay, state_max, timed))
        watcher = loop.create_task(self._watch_exit(session_id, inbox))
        try:
            after = first.open.resume_after
            pending = relay.pending_turns(after)
            await write(_ready(pending))
            await relay.attach(write, after)
            end = await inbox.get()
            if end.after_turn and relay.turn is not None:
                await asyncio.shield(relay.turn)  # the stream ends after its running turn
            if end.code is not grpc.StatusCode.OK:
                context.set_code(end.code)
                context.set_details(end.details)
        finally:
            relay.detach(write)
            reader.cancel()
            watcher.cancel()
            if self._inboxes.get(session_id) is inbox:
                del self._inboxes[session_id]
                if not self._inboxes:
                    self._no_streams.set()

    async def _read_commands(
        self, context: grpc.aio.ServicerContext, session_id: str, inbox: _Inbox,
        relay: TurnRelay, state_max: int, timed: _TimedWrite | None,
    ) -> None:
        """A query starts its turn right here (no hop through another task); an
        interrupt acts at once; the end of the stream goes to the stream's handler."""
        try:
            while (command := await context.read()) is not grpc.aio.EOF:
                kind = command.WhichOneof("command")
                if kind == "query":
                    query = command.query
                    turn_id = query.turn_id if TIMING else ""
                    if TIMING:
                        timing.point(wt.RUNNER_RECEIVED, turn_id, session_id)
                    relay.ack(relay.last_hint)  # the gateway logged every earlier event
                    relay.start(self._turn(session_id, query.prompt, query.options_json,
                                           state_max, turn_id))
                    if timed is not None:
                        timed.turn_id = turn_id
                elif kind == "interrupt":
                    await self.backend.interrupt(session_id)
                elif kind == "ack":
                    relay.ack(command.ack.seq_hint)
            inbox.put_nowait(_End(grpc.StatusCode.OK))
        except (grpc.RpcError, ConnectionError) as exc:
            inbox.put_nowait(_End(grpc.StatusCode.CANCELLED, f"stream broke: {exc}",
                                 after_turn=False))

    async def _watch_exit(self, session_id: str, inbox: _Inbox) -> None:
        await self.backend.wait_exit(session_id)
        reason = self.backend.stop_reason(session_id)
        inbox.put_nowait(_End(grpc.StatusCode.ABORTED,
                              f"{events.SANDBOX_EXITED}: {reason}" if reason
                              else events.SANDBOX_EXITED))

    async def Send(self, request: pb.SendRequest, context: grpc.aio.ServicerContext) -> None:
        write: Write = context.write
        turn_id = ""
        if TIMING:
            turn_id = request.turn_id
            timing.point(wt.RUNNER_RECEIVED, turn_id, request.session_id)
            write = _TimedWrite(context.write, request.session_id, turn_id)
        await write_turn(write, self._turn(
            request.session_id, request.prompt, request.options_json, request.state_max_bytes,
            turn_id))

    async def _turn(
        self, session_id: str, prompt: str, options_json: bytes, state_max: int,
        turn_id: str = "",
    ) -> AsyncIterator[pb.SessionEvent]:
        """One turn's messages: the bridge's events, the state chunks just before `done`."""
        if self.leaving:
            yield error_message(SHUTTING_DOWN, "runner_lost")
            yield _done_after_error(session_id)
            return
        try:
            options = orjson.loads(options_json) if options_json else None
            async for event in self.backend.send(session_id, prompt, options, turn_id=turn_id):
                if event.type == events.DONE:
                    async for message in self._state_messages(session_id, state_max):
                        yield message
                yield pb.SessionEvent(type=event.type, data=event.data)
        except (BackendError, orjson.JSONDecodeError) as exc:
            yield error_message(str(exc), "backend_error")
            yield _done_after_error(session_id)

    async def _state_messages(
        self, session_id: str, state_max: int
    ) -> AsyncIterator[pb.SessionEvent]:
        try:
            state = await self.backend.snapshot(session_id)
        except BackendError as exc:
            yield error_message(f"session state not saved off the runner: {exc}",
                                "state_not_saved")
            return
        if state_max and len(state) > state_max:
            yield error_message(
                f"session state is {len(state)} bytes, over the {state_max}-byte limit "
                "(ASH_STATE_MAX_BYTES): not saved off the runner, so losing the runner "
                "would lose this turn",
                "state_too_large",
            )
            return
        for message in state_chunks(state):
            yield pb.SessionEvent(state=message)

    async def Interrupt(
        self, request: pb.InterruptRequest, context: grpc.aio.ServicerContext
    ) -> pb.InterruptResponse:
        alive = self.backend.is_alive(request.session_id)
        await self.backend.interrupt(request.session_id)
        return pb.InterruptResponse(interrupted=alive)

    # state, exec, stats

    async def SnapshotState(
        self, request: pb.SnapshotStateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StateChunk]:
        try:
            state = await self.backend.snapshot(request.session_id)
        except BackendError as exc:
            await _fail(context, exc)
        if request.max_bytes and len(state) > request.max_bytes:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"session state is {len(state)} bytes, over the {request.max_bytes}-byte limit",
            )
        for chunk in state_chunks(state):
            yield chunk

    async def Exec(
        self, request: pb.ExecRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecResponse:
        try:
            result = await self.backend.exec(
                request.session_id, request.command, (request.timeout_ms or 30_000) / 1000
            )
        except BackendError as exc:
            await _fail(context, exc)
        return pb.ExecResponse(
            exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr,
            truncated=result.truncated, timed_out=result.timed_out,
        )

    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatsResponse:
        stats = self.backend.stats()
        times = os.times()
        return pb.StatsResponse(
            sandboxes=stats.sandboxes, busy=stats.busy, max_sandboxes=self.max_sandboxes,
            cpu_seconds=times.user + times.system + times.children_user + times.children_system,
            rss_bytes=_rss_bytes(),
        )

    # files (runner.grpc_files)

    async def ListFiles(self, request: pb.ListFilesRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ListFilesResponse]:
        async for batch in self._files.list_files(request, context):
            yield batch

    async def ReadFile(self, request: pb.ReadFileRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.FileChunk]:
        async for chunk in self._files.read_file(request, context):
            yield chunk

    async def WriteFiles(self, request_iterator: AsyncIterator[pb.WriteFilesRequest],
                         context: grpc.aio.ServicerContext) -> pb.WriteFilesResponse:
        return await self._files.write_files(request_iterator, context)

    async def DeleteFile(self, request: pb.DeleteFileRequest,
                         context: grpc.aio.ServicerContext) -> pb.DeleteFileResponse:
        return await self._files.delete_file(request, context)

    async def UploadWorkspace(self, request_iterator: AsyncIterator[pb.UploadWorkspaceRequest],
                              context: grpc.aio.ServicerContext) -> pb.UploadWorkspaceResponse:
        return await self._files.upload_workspace(request_iterator, context)


    async def ReadLogs(
        self, request: pb.ReadLogsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReadLogsResponse:
        limit = min(max(request.limit, 0) or MAX_LINES, MAX_LINES)
        try:
            page = await self.backend.logs(request.session_id, max(request.after, -1), limit)
        except BackendError as exc:
            await _fail(context, exc)
        return pb.ReadLogsResponse(
            lines=[pb.LogLine(index=line.index, level=line.level, text=line.text)
                   for line in page.lines],
            modified_unix_ms=int(page.modified * 1000),
        )


class _TimedWrite:
    """A stream's write that takes `runner.first_event_sent` (ASH_DEBUG_TIMING) once the
    write carrying the first token of turn `turn_id` returned, alone or coalesced."""

    def __init__(self, write: Write, session_id: str, turn_id: str = "") -> None:
        self._write = write
        self._session_id = session_id
        self.turn_id = turn_id
        """The turn whose first token is still to be sent ("" when none is)."""

    async def __call__(self, message: pb.SessionEvent) -> None:
        await self._write(message)
        if self.turn_id and (message.type in wt.TOKEN_EVENTS
                             or any(m.type in wt.TOKEN_EVENTS for m in message.more)):
            timing.point(wt.RUNNER_FIRST_EVENT_SENT, self.turn_id, self._session_id)
            self.turn_id = ""


async def write_turn(write: Write, messages: AsyncIterator[pb.SessionEvent]) -> None:
    """Write a turn's messages in order, coalescing events that pile up behind a write."""
    sink = Sink(write)
    async for message in messages:
        await sink.send(message)
    await sink.writer.flush()


def state_chunks(state: bytes) -> list[pb.StateChunk]:
    """A state archive as the chunks that carry it; the last one says so."""
    if not state:
        return [pb.StateChunk(data=b"", last=True)]
    size = len(state)
    return [
        pb.StateChunk(data=state[offset:offset + STATE_CHUNK_BYTES],
                      last=offset + STATE_CHUNK_BYTES >= size)
        for offset in range(0, size, STATE_CHUNK_BYTES)
    ]


def _created(info: SandboxInfo, *, attached: bool) -> pb.CreateSandboxResponse:
    return pb.CreateSandboxResponse(sandbox_id=info.sandbox_id, pid=info.pid,
                                    restored=info.restored and not attached,
                                    attached=attached, workspace=info.workspace,
                                    agent_backend=info.agent_backend)


async def _fail(context: grpc.aio.ServicerContext, exc: BackendError) -> None:
    """End the call with the status code that says what kind of failure `exc` is."""
    if isinstance(exc, SandboxGone):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, CapacityExceeded):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED  # the gateway places it elsewhere
    elif isinstance(exc, SandboxStartError):
        code = grpc.StatusCode.INTERNAL
    else:
        code = grpc.StatusCode.FAILED_PRECONDITION
    await context.abort(code, str(exc))


def _rss_bytes() -> int:
    """Resident memory of this process now (children are separate sandboxes)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    return 0


async def start_server(
    service: RunnerService,
    listen: str,
    secret: str,
    certfile: str | None = None,
    keyfile: str | None = None,
    max_message_bytes: int | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Serve `service` and the standard health service on `listen`; returns the bound port.
    `max_message_bytes`: the receive limit, by default sized for the default state cap."""
    limit = max_message_bytes or runner_max_message_bytes()
    server = grpc.aio.server(interceptors=[SecretCheck(secret)], options=server_options(limit))
    pb_grpc.add_RunnerServicer_to_server(service, server)
    health = service.health or health_aio.HealthServicer()
    service.health = health
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = add_listener(server, listen, certfile, keyfile)
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return server, port
