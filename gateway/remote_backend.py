"""`RemoteBackend`: the Backend protocol over gRPC to one ash-runner.

One grpc.aio channel per runner carries every call for all of its sessions:
HTTP/2 multiplexes them on one connection. Each live session holds one
long-lived `Session` stream, opened when its sandbox is created or restored,
off the time-to-first-token path: a turn is one message down and its events
up, never an RPC set-up (measured here: ~0.6 ms to start an RPC against
~60 us per message on an open stream).

Reading is driven by the consumer: the next message is read only once the
previous event has been taken, so a slow client stalls its own stream (HTTP/2
flow control, back to its bridge) and the gateway buffers nothing for it.

Before a turn's `done` the runner ships the session's state; `send` makes it
durable in the `StateStore` and only then yields `done`. A stream that breaks
mid-turn ends the turn with a `runner lost` error, then `done`, and the session
is no longer alive here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson

from gateway.agent_bundles import AgentBundles
from gateway.remote_files import RemoteFiles
from gateway.state_store import StateStore
from runner.backend import (
    AgentSpec,
    BackendError,
    BackendStats,
    ExecResult,
    SandboxGone,
    SandboxInfo,
    SandboxStartError,
)
from runner.bridge_log import LEVEL, LINE_CAP, LOG_LEVELS, LogLine, LogPage
from runner.grpc_transport import open_channel
from wire import events
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc
from wire.events import SANDBOX_EXITED, Event
from wire.internal_auth import call_metadata

log = logging.getLogger("ash.coordinator")

TURN_RPC_SESSION = "session"
"""A turn is a `query` on the session's long-lived stream (the default)."""
TURN_RPC_SEND = "send"
"""A turn opens its own `Send` RPC: the per-turn design, kept to benchmark against."""
TURN_RPCS = (TURN_RPC_SESSION, TURN_RPC_SEND)

CREATE_TIMEOUT = 60.0
CALL_TIMEOUT = 30.0
DRAIN_TIMEOUT = 10.0
GATEWAY_SHUTDOWN = "gateway shutting down"
_INTERRUPT = pb.SessionCommand(interrupt=pb.SessionCommand.Interrupt())
_RETRY_ELSEWHERE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.DEADLINE_EXCEEDED)

Read = Callable[[], Awaitable[Any]]


def every_message(call: Any) -> Read:
    """A reader of `call`'s responses that yields every message the runner sent before its
    status. `call.read()` raises as soon as the status has arrived, dropping what is still
    buffered: a runner that ends a stream with ABORTED ("sandbox exited") right after a
    turn's backlog would lose that turn's `error` and `done`. The call's async iterator reads
    to the end first. One reader per call: the two styles cannot be mixed on one call."""
    messages = call.__aiter__()

    async def read() -> Any:
        try:
            return await anext(messages)
        except StopAsyncIteration:
            return grpc.aio.EOF

    return read


class RunnerUnavailable(BackendError):
    """This runner cannot take the sandbox now (full, draining, unreachable): try another."""


class StateTooLarge(BackendError):
    """The session's state is over the configured cap; it was not shipped."""


@dataclass(eq=False)
class _Stream:
    """A session's long-lived Session stream and what is going on on it."""

    call: grpc.aio.StreamStreamCall
    info: SandboxInfo
    read: Read
    """Reads the call's responses (`every_message`)."""
    busy: bool = False
    closed: bool = False
    """The session is not alive here any more (`is_alive` is False)."""
    call_ended: bool = False
    """The call is over; while a turn still relays what it read, `closed` waits for it."""
    retiring: bool = False
    """Close once the running turn is done (the runner is leaving)."""
    draining: asyncio.Task[None] | None = None
    """An abandoned turn being interrupted and read to its `done`."""
    pending_turns: int = 0
    """Turns the runner ran on with no gateway attached; `replay` reads them."""
    acking: asyncio.Task[None] | None = None
    ack_hint: int = 0
    turn_done: bool = True
    """The running turn's `done` was relayed: its next query acknowledges it all."""
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def write(self, command: pb.SessionCommand) -> None:
        async with self.write_lock:
            await self.call.write(command)

    closed_here: bool = False
    """This gateway closed the stream (destroy, a newer stream, retiring)."""

    def close(self) -> None:
        self.closed = True
        self.closed_here = True
        self.call.cancel()


class RemoteBackend:
    """Sessions on one runner, over one channel."""

    def __init__(
        self,
        runner_id: str,
        target: str,
        *,
        secret: str,
        states: StateStore,
        bundles: AgentBundles,
        cafile: str | None = None,
        turn_rpc: str = TURN_RPC_SESSION,
    ) -> None:
        if turn_rpc not in TURN_RPCS:
            raise ValueError(f"turn_rpc must be one of {TURN_RPCS}")
        self.runner_id = runner_id
        self.target = target
        self._states = states
        self._bundles = bundles
        self._turn_rpc = turn_rpc
        self._metadata = call_metadata(secret)
        self._channel = open_channel(target, cafile)
        self._stub = pb_grpc.RunnerStub(self._channel)
        self._streams: dict[str, _Stream] = {}
        self._creating = 0
        self._ended: str | None = None
        """Why this backend takes no more work (runner lost or leaving, gateway closing)."""
        self._channel_closing = False
        self._background: set[asyncio.Task[None]] = set()
        self.stop_listener: Callable[[str, str], None] | None = None
        """Told (session id, why) when the runner reports a session's sandbox exited."""
        self._lost_event = Event(events.ERROR, orjson.dumps(
            {"error": "runner lost", "code": "runner_lost", "runner": runner_id}
        ))

    @property
    def accepting(self) -> bool:
        return self._ended is None

    @property
    def placed(self) -> int:
        """Sandboxes this gateway holds or is creating on the runner."""
        return len(self._streams) + self._creating

    # lifecycle

    async def create(
        self, session_id: str, agent: AgentSpec, *, state: bytes | None = None,
        resume_after: int = 0,
    ) -> SandboxInfo:
        """Start (or attach to) the session's sandbox and open its stream. `resume_after`:
        the last runner hint the event log holds, for a sandbox the runner kept."""
        if self._ended is not None:
            raise RunnerUnavailable(f"runner {self.runner_id}: {self._ended}")
        request = pb.CreateSandboxRequest(
            session_id=session_id, agent_name=agent.name, agent_version=str(agent.version),
            agent_bundle=await self._bundles.get(agent),
            agent_config_json=orjson.dumps(agent.config), state=state,
        )
        if agent.credential is not None:
            request.credential.type = agent.credential.type
            request.credential.key = agent.credential.key
        self._creating += 1
        try:
            response = await self._call(self._stub.CreateSandbox(
                request, metadata=self._metadata, timeout=CREATE_TIMEOUT))
            info = SandboxInfo(
                sandbox_id=response.sandbox_id, session_id=session_id, pid=response.pid,
                workspace=response.workspace, restored=response.restored or response.attached,
                runner_id=self.runner_id, agent_backend=response.agent_backend,
                attached=response.attached,
            )
            try:
                pending = await self._open(info, resume_after if response.attached else 0)
            except BaseException:
                with contextlib.suppress(BackendError):
                    await asyncio.shield(self.destroy(session_id, keep_workspace=True))
                raise
        finally:
            self._creating -= 1
        return dataclasses.replace(info, pending_turns=pending) if pending else info

    async def _open(self, info: SandboxInfo, resume_after: int) -> int:
        """Open the session's stream and wait for the runner's `ready` on it; returns
        how many turns the runner ran on without a gateway (their events follow)."""
        session_id = info.session_id
        call = self._stub.Session(metadata=self._metadata)
        read = every_message(call)
        try:
            async with asyncio.timeout(CREATE_TIMEOUT):
                await call.write(pb.SessionCommand(open=pb.SessionCommand.Open(
                    session_id=session_id, state_max_bytes=self._states.max_bytes,
                    resume_after=resume_after)))
                first = await self._call(read())
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF or first.type != events.READY:
            call.cancel()
            raise BackendError(f"runner {self.runner_id} did not open session {session_id}")
        previous = self._streams.get(session_id)
        if previous is not None:
            previous.close()
        pending = int(orjson.loads(first.data).get("pendingTurns", 0)) if first.data else 0
        stream = _Stream(call, info, read, pending_turns=pending)
        self._streams[session_id] = stream
        call.add_done_callback(lambda _call: self._stream_ended(session_id, stream))
        return pending

    def _stream_ended(self, session_id: str, stream: _Stream) -> None:
        """The call is over. A turn that got its `done` first still ends as a success:
        then the session stays alive until that turn has been relayed."""
        stream.call_ended = True
        if not stream.busy:
            self._forget(session_id, stream)
        if self.stop_listener is not None and not stream.closed_here:
            task = asyncio.get_running_loop().create_task(self._report_stop(session_id, stream))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _report_stop(self, session_id: str, stream: _Stream) -> None:
        """Tell the stop listener of a sandbox its runner saw exit (the stream's status
        says so, and why), so the session pauses even with no turn to say it."""
        with contextlib.suppress(Exception):
            code, details = await stream.call.code(), await stream.call.details()
            if code is grpc.StatusCode.ABORTED and details.startswith(SANDBOX_EXITED):
                assert self.stop_listener is not None
                self.stop_listener(session_id, details[:500])

    def _forget(self, session_id: str, stream: _Stream) -> None:
        stream.closed = True
        if self._streams.get(session_id) is stream:
            del self._streams[session_id]
        if self._ended is not None and not self._streams:
            self._close_channel()

    def is_alive(self, session_id: str) -> bool:
        stream = self._streams.get(session_id)
        return stream is not None and not stream.closed

    async def destroy(self, session_id: str, *, keep_workspace: bool = False) -> None:
        stream = self._streams.pop(session_id, None)
        if stream is not None:
            stream.close()
        if self._ended is not None:
            return
        try:
            await self._call(self._stub.DestroySandbox(
                pb.DestroySandboxRequest(session_id=session_id, keep_workspace=keep_workspace),
                metadata=self._metadata, timeout=CALL_TIMEOUT))
        except (SandboxGone, RunnerUnavailable):
            pass

    # turns

    def send(
        self, session_id: str, prompt: str, options: dict[str, Any] | None = None,
        *, turn_id: str = "",
    ) -> AsyncGenerator[Event, None]:
        """One turn's events, `done` last, with the session state durable before `done`.

        A consumer that stops early leaves the turn to a background drain that
        interrupts it, so the next `send` on the stream starts clean.
        """
        return self._turns(session_id, prompt, options, turn_id)

    def replay(self, session_id: str) -> AsyncGenerator[Event, None]:
        """The rest of the turns the runner ran on while no gateway was attached."""
        return self._turns(session_id, None, None)

    async def _turns(
        self, session_id: str, prompt: str | None, options: dict[str, Any] | None,
        turn_id: str = "",
    ) -> AsyncGenerator[Event, None]:
        """A new turn (`prompt`), or with None the pending ones read to their last `done`."""
        stream = self._streams.get(session_id)
        if stream is None or stream.closed:
            raise SandboxGone(f"session {session_id} has no live sandbox")
        if stream.busy:
            raise BackendError("session busy")
        try:
            options_json = orjson.dumps(options) if options else b""
        except TypeError as exc:
            raise BackendError(f"message options are not JSON: {exc}") from exc
        stream.busy = True
        stream.turn_done = False
        turn_open = False
        per_turn_call: grpc.aio.UnaryStreamCall | None = None
        try:
            if stream.draining is not None:
                await asyncio.wait({stream.draining})
                if stream.closed:
                    raise SandboxGone(f"session {session_id} has no live sandbox")
            turn_open = True
            turns = 1
            if prompt is None:
                turns, stream.pending_turns = stream.pending_turns, 0
                read: Read = stream.read
            elif self._turn_rpc == TURN_RPC_SEND:
                per_turn_call = self._stub.Send(pb.SendRequest(
                    session_id=session_id, prompt=prompt, options_json=options_json,
                    state_max_bytes=self._states.max_bytes, turn_id=turn_id),
                    metadata=self._metadata)
                read = every_message(per_turn_call)
            else:
                try:
                    await stream.write(pb.SessionCommand(
                        query=pb.SessionCommand.Query(prompt=prompt, options_json=options_json,
                                                      turn_id=turn_id)))
                except (grpc.RpcError, asyncio.InvalidStateError):
                    read = _broken
                else:
                    read = stream.read
            for _ in range(turns):
                async for event in self._relay(session_id, stream, read):
                    turn_open = event.type != events.DONE
                    yield event
                if stream.closed:
                    break
            turn_open = False
        finally:
            stream.busy = False
            if turn_open and per_turn_call is not None:
                per_turn_call.cancel()
            elif turn_open and not stream.closed:
                stream.draining = asyncio.get_running_loop().create_task(
                    self._drain(session_id, stream))
            if stream.call_ended:
                self._forget(session_id, stream)
            elif stream.retiring and stream.draining is None:
                stream.close()

    def acknowledge(self, hints: dict[str, int]) -> None:
        """Tell the runner which events the log holds, one Ack in flight per stream.

        Only mid-turn: once a turn's `done` is through, the next query says it all."""
        for session_id, hint in hints.items():
            stream = self._streams.get(session_id)
            if stream is None or stream.closed or stream.turn_done:
                continue
            stream.ack_hint = max(stream.ack_hint, hint)
            if stream.acking is None:
                stream.acking = asyncio.get_running_loop().create_task(self._send_acks(stream))

    async def _send_acks(self, stream: _Stream) -> None:
        try:
            sent = 0
            while stream.ack_hint > sent and not stream.closed:
                sent = stream.ack_hint
                await stream.write(pb.SessionCommand(ack=pb.SessionCommand.Ack(seq_hint=sent)))
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the stream is over: the next gateway stream resumes from the log's hint
        finally:
            stream.acking = None

    async def _relay(
        self, session_id: str, stream: _Stream, read: Read
    ) -> AsyncGenerator[Event, None]:
        """Events read from a turn's stream up to `done`; state chunks go to the store.

        A stream that breaks first ends the turn with an error and `done`, and the
        session is no longer alive here by the time they are yielded. When this
        gateway is shutting down the events just stop: the runner keeps the turn
        running and the next gateway takes it over."""
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await read()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                message = None  # the call was cancelled under us: runner lost, gateway closing
            except grpc.RpcError:
                message = None
            if message is None or message is grpc.aio.EOF:
                self._forget(session_id, stream)
                if self._ended == GATEWAY_SHUTDOWN:
                    return  # the runner keeps the turn running; the next gateway logs the rest
                yield self._lost_event
                yield Event(events.DONE, events.done_payload(session_id, "error"))
                return
            event_type = message.type
            if event_type:
                more = message.more
                if (more[-1].type if more else event_type) == events.DONE:
                    stream.turn_done = True  # before the log writes `done`: no Ack for it
                hint = message.seq_hint or None
                yield Event(event_type, message.data, hint)
                for extra in more:
                    event_type = extra.type
                    if hint is not None:
                        hint += 1
                    yield Event(event_type, extra.data, hint)
                if event_type == events.DONE:
                    return
                continue
            piece = message.state
            size += len(piece.data)
            chunks.append(piece.data)
            if piece.last:
                failure = await self._keep_state(session_id, b"".join(chunks), size)
                chunks, size = [], 0
                if failure is not None:
                    yield failure

    async def _keep_state(self, session_id: str, state: bytes, size: int) -> Event | None:
        """Store a shipped state; an error event for the turn if that did not happen."""
        if size > self._states.max_bytes:
            return _error_event(
                f"session state is {size} bytes, over the {self._states.max_bytes}-byte limit "
                "(ASH_STATE_MAX_BYTES): not saved", "state_too_large")
        try:
            await self._states.save(session_id, state)
        except OSError as exc:
            log.error("cannot store the state of session %s: %s", session_id, exc)
            return _error_event(f"session state not saved: {exc}", "state_not_saved")
        return None

    async def _drain(self, session_id: str, stream: _Stream) -> None:
        """Interrupt an abandoned turn and read it to its `done` (its state is still kept)."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await stream.write(_INTERRUPT)
                async for _event in self._relay(session_id, stream, stream.read):
                    pass
        except (TimeoutError, grpc.RpcError, asyncio.InvalidStateError):
            log.warning("session %s on runner %s did not finish an abandoned turn; "
                        "closing its stream", session_id, self.runner_id)
            stream.close()
        finally:
            stream.draining = None
            if stream.retiring:
                stream.close()

    async def interrupt(self, session_id: str) -> None:
        stream = self._streams.get(session_id)
        if stream is None or stream.closed or not stream.busy:
            return
        try:
            if self._turn_rpc == TURN_RPC_SEND:
                await self._stub.Interrupt(pb.InterruptRequest(session_id=session_id),
                                           metadata=self._metadata, timeout=CALL_TIMEOUT)
            else:
                await stream.write(_INTERRUPT)
        except (grpc.RpcError, asyncio.InvalidStateError) as exc:
            log.info("interrupt of session %s not delivered: %s", session_id, exc)

    async def exec(self, session_id: str, command: str, time_limit: float) -> ExecResult:
        self._require_live(session_id)
        response = await self._call(self._stub.Exec(
            pb.ExecRequest(session_id=session_id, command=command,
                           timeout_ms=int(time_limit * 1000)),
            metadata=self._metadata, timeout=time_limit + CALL_TIMEOUT))
        return ExecResult(exit_code=response.exit_code, stdout=response.stdout,
                          stderr=response.stderr, truncated=response.truncated,
                          timed_out=response.timed_out)

    # state

    async def snapshot(self, session_id: str) -> bytes:
        self._require_live(session_id)
        call = self._stub.SnapshotState(
            pb.SnapshotStateRequest(session_id=session_id, max_bytes=self._states.max_bytes),
            metadata=self._metadata, timeout=CREATE_TIMEOUT)
        try:
            return b"".join([chunk.data async for chunk in call])
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise StateTooLarge(f"{exc.details()} (ASH_STATE_MAX_BYTES)") from exc
            raise _backend_error(exc, self.runner_id) from exc

    async def checkpoint(self, session_id: str) -> None:
        """Ship the session's current state to the gateway's store (on pause)."""
        if self.is_alive(session_id):
            await self._states.save(session_id, await self.snapshot(session_id))

    def stats(self) -> BackendStats:
        live = [s for s in self._streams.values() if not s.closed]
        return BackendStats(sandboxes=len(live),
                            busy=sum(1 for s in live if s.busy or s.draining is not None))

    def files(self, session_id: str) -> RemoteFiles:
        """The files rpcs on the session's workspace here (gateway/api/files.py)."""
        return RemoteFiles(self._stub, self._metadata, self.runner_id, session_id)

    # the runner's fate

    def lost(self, reason: str) -> None:
        """The runner is gone: end every in-flight turn (`runner lost`) and drop the channel."""
        self._end(reason)
        for stream in list(self._streams.values()):
            stream.close()
        self._streams.clear()
        self._close_channel()

    def retire(self) -> None:
        """The runner is leaving: idle streams close now, busy ones after their turn."""
        self._end("runner is shutting down")
        for stream in list(self._streams.values()):
            if stream.busy or stream.draining is not None:
                stream.retiring = True
            else:
                stream.close()
        if not self._streams:
            self._close_channel()

    async def close(self) -> None:
        """Gateway shutdown: streams end (the runner keeps the sandboxes for a later attach)."""
        self._end(GATEWAY_SHUTDOWN)
        self._channel_closing = True
        for stream in list(self._streams.values()):
            stream.close()
        await self._channel.close()

    def _end(self, reason: str) -> None:
        if self._ended is None:
            self._ended = reason

    def _close_channel(self) -> None:
        if not self._channel_closing:
            self._channel_closing = True
            task = asyncio.get_running_loop().create_task(self._channel.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # helpers

    async def logs(self, session_id: str, after: int, limit: int) -> LogPage:
        """The runner's lines of the session's bridge log, held to what was asked: at
        most `limit` lines, each after `after` and after the one before it, of a known
        level, cut to `LINE_CAP` characters."""
        try:
            response = await self._stub.ReadLogs(
                pb.ReadLogsRequest(session_id=session_id, after=after, limit=limit),
                metadata=self._metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return LogPage()
            raise _backend_error(exc, self.runner_id) from exc
        lines: list[LogLine] = []
        for line in response.lines[:limit]:
            if line.index <= (lines[-1].index if lines else after):
                break
            level = line.level if line.level in LOG_LEVELS else LEVEL
            lines.append(LogLine(line.index, line.text[:LINE_CAP], level))
        return LogPage(lines, max(response.modified_unix_ms, 0) / 1000)

    def _require_live(self, session_id: str) -> None:
        if not self.is_alive(session_id):
            raise SandboxGone(f"session {session_id} has no live sandbox")

    async def _call(self, pending: Awaitable[Any]) -> Any:
        """Await one RPC (or stream read), its failure as the matching BackendError."""
        try:
            return await pending
        except grpc.aio.AioRpcError as exc:
            raise _backend_error(exc, self.runner_id) from exc


async def _broken() -> None:
    """The read of a stream whose query could not even be written."""
    return None


def _error_event(message: str, code: str) -> Event:
    return Event(events.ERROR, orjson.dumps({"error": message, "code": code}))


def _backend_error(exc: grpc.aio.AioRpcError, runner_id: str) -> BackendError:
    code, details = exc.code(), exc.details() or exc.code().name
    if code == grpc.StatusCode.NOT_FOUND:
        return SandboxGone(details)
    if code in _RETRY_ELSEWHERE:
        return RunnerUnavailable(f"runner {runner_id}: {details}")
    if code == grpc.StatusCode.INTERNAL:
        return SandboxStartError(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return BackendError(f"runner {runner_id} refused the internal secret: {details}")
    return BackendError(f"runner {runner_id}: {details}")
