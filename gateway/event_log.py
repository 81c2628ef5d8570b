"""The event log, written behind the stream.

Events are appended in memory and written to SQLite in batches: on a short
timer, and synchronously by `flush()` before a turn's `done` is sent, so the
hot path never waits for a disk write per event but a finished turn is durable.
A finished turn's usage (`gateway.usage`) rides the same batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from gateway.store import Store, UsageRow

DEFAULT_FLUSH_INTERVAL = 0.05


class EventLog:
    def __init__(self, store: Store, flush_interval: float = DEFAULT_FLUSH_INTERVAL) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._pending: list[tuple[str, int, str, bytes, float]] = []
        self._last_seq: dict[str, int] = {}
        self._last_hint: dict[str, int] = {}
        self._usage: list[UsageRow] = []
        self._prompts: list[tuple[str, int, bytes, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.on_flushed: Callable[[dict[str, int]], None] | None = None
        """Told, after each write, each session's last runner hint it made durable."""

    def append(self, session_id: str, seq: int, event_type: str, data: bytes,
               hint: int | None = None) -> None:
        self._pending.append((session_id, seq, event_type, data, time.time()))
        self._last_seq[session_id] = seq
        if hint is not None:
            self._last_hint[session_id] = hint
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_interval, self.flush)

    def record_usage(self, rows: Sequence[UsageRow]) -> None:
        """Usage rows to write with the next batch (the one that logs the turn's end)."""
        self._usage.extend(rows)

    def record_prompt(self, session_id: str, seq: int, prompt: bytes) -> None:
        """A turn's user message, recorded under the id of its `session_start` with the
        next batch (the one that logs that `session_start`)."""
        self._prompts.append((session_id, seq, prompt, time.time()))

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending and not self._usage and not self._prompts:
            return
        hints = self._last_hint
        self._store.append_events(self._pending, self._last_seq, hints, self._usage,
                                  self._prompts)
        self._pending, self._last_seq, self._last_hint = [], {}, {}
        self._usage, self._prompts = [], []
        if hints and self.on_flushed is not None:
            self.on_flushed(hints)

    @property
    def pending(self) -> int:
        return len(self._pending)
