"""What a running gateway owns, handed to every route handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.event_log import EventLog
from gateway.sessions import SessionService
from gateway.sse_stream import StreamSettings
from gateway.store import Store
from runner.backend import Backend


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

    async def close(self) -> None:
        """Stop sandboxes (workspaces kept for cold resume), flush the log, close the db."""
        self.event_log.flush()
        await self.backend.close()
        self.store.close()
