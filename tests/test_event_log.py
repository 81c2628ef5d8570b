"""The event log writes behind the stream, in batches, and flushes on demand."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import apsw
import pytest

from gateway.event_log import EventLog
from gateway.store import Store, UsageFilter, UsageRow


async def test_appends_are_batched_until_the_timer_fires(tmp_path: Path) -> None:
    store = Store(tmp_path / "ash.db")
    store.insert_session("s1", "a", 1)
    log = EventLog(store, flush_interval=0.05)
    for seq in range(1, 4):
        log.append("s1", seq, "text_delta", b'{"text":"x"}')
    assert store.events_after("s1", 0, 10) == []
    await asyncio.sleep(0.15)
    assert [e.seq for e in store.events_after("s1", 0, 10)] == [1, 2, 3]
    assert log.pending == 0


async def test_flush_makes_pending_events_durable_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "ash.db")
    store.insert_session("s1", "a", 1)
    log = EventLog(store, flush_interval=60)
    log.append("s1", 1, "done", b"{}")
    log.flush()
    assert [e.type for e in Store(tmp_path / "ash.db").events_after("s1", 0, 10)] == ["done"]
    assert store.get_session("s1").last_event_seq == 1


def _usage_row(session_id: str = "s1") -> UsageRow:
    return UsageRow(str(uuid.uuid4()), "default", session_id, "a", "message", 1, 0.0)


async def test_a_turns_usage_is_written_in_the_batch_that_logs_its_done(tmp_path: Path) -> None:
    store = Store(tmp_path / "ash.db")
    store.insert_session("s1", "a", 1)
    log = EventLog(store, flush_interval=60)
    log.append("s1", 1, "done", b"{}")
    log.record_usage([_usage_row()])
    assert store.usage_totals(UsageFilter("default")) == {}
    log.flush()
    assert Store(tmp_path / "ash.db").usage_totals(UsageFilter("default")) == {"message": 1}


async def test_a_batch_that_fails_writes_none_of_its_usage(tmp_path: Path) -> None:
    store = Store(tmp_path / "ash.db")
    store.insert_session("s1", "a", 1)
    store.append_events([("s1", 1, "done", b"{}", 0.0)], {"s1": 1})
    log = EventLog(store, flush_interval=60)
    log.append("s1", 1, "done", b"{}")  # the same id again: the batch's insert fails
    log.record_usage([_usage_row()])
    with pytest.raises(apsw.ConstraintError):
        log.flush()
    assert store.usage_totals(UsageFilter("default")) == {}
