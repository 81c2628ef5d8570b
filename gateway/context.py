"""What a running gateway owns, handed to every route handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.auth import KeyRing
from gateway.credentials import CredentialVault
from gateway.event_log import EventLog
from gateway.metrics import GatewayMetrics
from gateway.queue import QueueService, QueueSettings
from gateway.sessions import SessionService
from gateway.sse_stream import StreamSettings
from gateway.store import Store
from runner.backend import Backend

log = logging.getLogger("ash.gateway")

RETENTION_SWEEP_INTERVAL = 3600.0
SHUTDOWN_TURN_GRACE = 5.0
IDLE_SWEEP_INTERVAL = 30.0
IDLE_SWEEP_MIN_INTERVAL = 0.1


@dataclass
class Gateway:
    store: Store
    backend: Backend
    sessions: SessionService
    event_log: EventLog
    agents_dir: Path
    mode: str = "standalone"
    started_at: float = 0.0
    stream_settings: StreamSettings = field(default_factory=StreamSettings)
    event_retention_seconds: float = 7 * 86400
    sandbox: dict[str, Any] | None = None
    """How local sandboxes are isolated (standalone mode), as /health shows it."""
    queue_settings: QueueSettings = field(default_factory=QueueSettings)
    queue: QueueService = field(init=False)
    keys: KeyRing | None = None
    """The API keys (`gateway.auth`): the /api/api-keys routes manage them."""
    metrics: GatewayMetrics | None = None
    """Its Prometheus registry (`gateway.metrics`), made by `gateway.api.metrics`."""
    _sweeper: asyncio.Task[None] | None = None
    _idle_sweeper: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.queue = QueueService(self.store, self.sessions, self.queue_settings)

    @property
    def credentials(self) -> CredentialVault:
        """The tenants' model credentials (`gateway.credentials`)."""
        return self.sessions.credentials

    def start_background_work(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep_forever())
        if self.sessions.idle_timeout > 0:
            self._idle_sweeper = loop.create_task(self._pause_idle_forever())
        self.queue.start()

    async def _pause_idle_forever(self) -> None:
        """Pause sessions idle longer than the idle timeout (`SessionService.pause_idle`),
        looking a few times per timeout (at most every `IDLE_SWEEP_INTERVAL` seconds)."""
        timeout = self.sessions.idle_timeout
        interval = min(IDLE_SWEEP_INTERVAL, max(IDLE_SWEEP_MIN_INTERVAL, timeout / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sessions.pause_idle()
            except Exception:
                log.exception("idle sweep failed; trying again in %g s", interval)

    async def _sweep_forever(self) -> None:
        """Drop the event logs of sessions that ended longer ago than the retention."""
        while True:
            removed = self.store.delete_expired_events(time.time() - self.event_retention_seconds)
            if removed:
                log.info("event retention: removed %d events of long-ended sessions", removed)
            await asyncio.sleep(RETENTION_SWEEP_INTERVAL)

    async def close(self) -> None:
        """Stop sandboxes (workspaces kept for cold resume), flush the log, close the db."""
        for sweeper in (self._sweeper, self._idle_sweeper):
            if sweeper is not None:
                sweeper.cancel()
        await self.queue.close()
        await self.backend.close()
        # Stopping the sandboxes ends running turns (an error event, then done); let
        # their producers log that before the log is flushed for the last time.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TURN_GRACE):
                await self.sessions.wait_for_turns()
        self.event_log.flush()
        self.store.release_seq_reservations()
        self.store.close()
