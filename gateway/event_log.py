"""The event log, written behind the stream.

Events are appended in memory and written to SQLite in batches: on a short
timer, and synchronously by `flush()` before a turn's `done` is sent, so the
hot path never waits for a disk write per event but a finished turn is durable.
"""

from __future__ import annotations

import asyncio
import time

from gateway.store import Store

DEFAULT_FLUSH_INTERVAL = 0.05


class EventLog:
    def __init__(self, store: Store, flush_interval: float = DEFAULT_FLUSH_INTERVAL) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._pending: list[tuple[str, int, str, bytes, float]] = []
        self._last_seq: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def append(self, session_id: str, seq: int, event_type: str, data: bytes) -> None:
        self._pending.append((session_id, seq, event_type, data, time.time()))
        self._last_seq[session_id] = seq
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        self._store.append_events(self._pending, self._last_seq)
        self._pending, self._last_seq = [], {}

    @property
    def pending(self) -> int:
        return len(self._pending)
