"""Staying registered with the gateway: Register once, then one Heartbeat stream for life.

Capacity goes up every interval; commands come down (`drain`: take no new
sandboxes). Every heartbeat is acknowledged, so each side knows within three
intervals that the other is gone. When the stream breaks or the acks stop, the
runner connects again with exponential backoff and registers anew: a restarted
gateway finds its runners back within one backoff step, with their sandboxes.

On shutdown the runner deregisters (a heartbeat marked `leaving`): the gateway
pauses its sessions at once instead of waiting for missed heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import grpc

from runner.grpc_server import RunnerService
from runner.grpc_transport import open_channel
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc
from wire.internal_auth import call_metadata

log = logging.getLogger("ash.runner")

MISSED_ACKS = 3
"""Heartbeat intervals without an acknowledgement after which the gateway counts as gone."""
LEAVE_TIMEOUT = 5.0


class RegistrationRefused(Exception):
    """The gateway will not have this runner (wrong secret, bad id): retrying cannot help."""


class _Disconnected(Exception):
    """The gateway closed the heartbeat stream or stopped acknowledging heartbeats."""


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    gateway: str
    """HOST:PORT of the gateway's registry listener."""
    runner_id: str
    advertise_host: str
    advertise_port: int
    max_sandboxes: int
    heartbeat_interval: float
    secret: str
    cafile: str | None = None
    version: str = "0.1.0"


@dataclass(slots=True)
class Backoff:
    """Exponential reconnect delays with jitter, from `initial` up to `cap` seconds."""

    initial: float
    cap: float
    _next: float = 0.0

    def next(self) -> float:
        self._next = min(self.cap, self._next * 2 if self._next else self.initial)
        return self._next * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = 0.0


class Registration:
    def __init__(self, config: RegistrationConfig, service: RunnerService) -> None:
        self._config = config
        self._service = service
        self._metadata = call_metadata(config.secret)
        self._connected = False
        self._leave = asyncio.Event()
        self._left = asyncio.Event()
        self._last_ack = 0.0
        self._sent = self._acked = 0
        self._leave_seq = 0
        """Number of the heartbeat that said `leaving`; its acknowledgement ends `leave`."""

    async def run(self) -> None:
        """Stay registered until deregistered by `leave` (or cancelled).

        Raises RegistrationRefused when the gateway refuses the runner.
        """
        interval = self._config.heartbeat_interval
        backoff = Backoff(initial=min(0.1, interval), cap=min(10.0, max(1.0, 10 * interval)))
        while not self._left.is_set():
            try:
                await self._registered_session(backoff)
            except RegistrationRefused:
                raise
            except (grpc.RpcError, OSError, asyncio.InvalidStateError, _Disconnected) as exc:
                # InvalidStateError: a heartbeat written just as the gateway ended the call.
                log.warning("gateway %s unreachable or gone (%s); reconnecting",
                            self._config.gateway, _describe(exc))
            finally:
                self._connected = False
            if not self._left.is_set():
                await asyncio.sleep(backoff.next())

    async def leave(self) -> bool:
        """Deregister; True once the gateway acknowledged (its sessions are then paused)."""
        if not self._connected:
            return False
        self._leave.set()
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT):
                await self._left.wait()
        except TimeoutError:
            return False
        return True

    async def _registered_session(self, backoff: Backoff) -> None:
        """Register, then heartbeat until the stream ends; returns after a clean `leave`."""
        config = self._config
        channel = open_channel(config.gateway, config.cafile)
        try:
            stub = pb_grpc.RunnerRegistryStub(channel)
            try:
                response = await stub.Register(self._register_request(), metadata=self._metadata,
                                               timeout=max(5.0, 3 * config.heartbeat_interval))
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.PERMISSION_DENIED):
                    raise RegistrationRefused(exc.details() or exc.code().name) from exc
                raise
            if not response.accepted:
                raise RegistrationRefused(response.reason or "registration not accepted")
            self._service.release(response.release_session_ids)
            interval = response.heartbeat_interval_ms / 1000
            call = stub.Heartbeat(metadata=self._metadata)
            self._connected = True
            backoff.reset()
            log.info("registered with gateway %s as %s (heartbeat every %g s)",
                     config.gateway, config.runner_id, interval)
            try:
                await self._heartbeat(call, interval)
            finally:
                call.cancel()
        finally:
            await channel.close()

    async def _heartbeat(self, call: grpc.aio.StreamStreamCall, interval: float) -> None:
        loop = asyncio.get_running_loop()
        self._last_ack = loop.time()
        self._sent = self._acked = 0
        reader = loop.create_task(self._read_commands(call))
        leave = loop.create_task(self._leave.wait())
        try:
            while True:
                leaving = self._leave.is_set()
                await call.write(pb.HeartbeatRequest(
                    runner_id=self._config.runner_id, capacity=self._service.capacity(),
                    sent_at_unix_ms=int(time.time() * 1000), leaving=leaving,
                ))
                self._sent += 1
                if leaving:
                    self._leave_seq = self._sent
                    await asyncio.wait({reader}, timeout=LEAVE_TIMEOUT)
                    return
                await asyncio.wait({reader, leave}, timeout=interval,
                                   return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    reader.result()
                    raise _Disconnected("the gateway closed the heartbeat stream")
                silent = loop.time() - self._last_ack
                if silent > MISSED_ACKS * interval:
                    raise _Disconnected(f"no acknowledgement for {silent:.1f} s")
        finally:
            reader.cancel()
            leave.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await reader

    async def _read_commands(self, call: grpc.aio.StreamStreamCall) -> None:
        """Acknowledgements and commands from the gateway; returns when the stream ends."""
        loop = asyncio.get_running_loop()
        while (response := await call.read()) is not grpc.aio.EOF:
            self._last_ack = loop.time()
            if response.WhichOneof("command") == "drain":
                self._service.drain(response.drain.reason)
                continue
            self._acked += 1
            if self._leave_seq and self._acked >= self._leave_seq:
                self._left.set()
                return

    def _register_request(self) -> pb.RegisterRequest:
        config = self._config
        return pb.RegisterRequest(
            runner_id=config.runner_id, host=config.advertise_host, port=config.advertise_port,
            max_sandboxes=config.max_sandboxes, version=config.version,
            heartbeat_interval_ms=max(1, round(config.heartbeat_interval * 1000)),
            draining=self._service.draining, session_ids=self._service.live_sessions(),
            unfinished_turns=self._service.unfinished_turns(),
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
