"""The queue's store and settling rules, on a real database file: claims, priorities,
backoff, and what a restart makes of an item left processing (read from the session's log)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import apsw
import orjson
import pytest

from gateway.queue import GATEWAY_STOPPED, QueueService, QueueSettings, turn_outcome
from gateway.store import MIGRATIONS, Store
from wire import events

QUEUE_MIGRATION = next(n for n, script in enumerate(MIGRATIONS) if "queue_items" in script)
"""The schema version just before the queue's table."""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ash.db")


def service(store: Store, **settings: Any) -> QueueService:
    sessions = SimpleNamespace(event_log=SimpleNamespace(flush=lambda: None))
    return QueueService(store, sessions, QueueSettings(**settings))  # type: ignore[arg-type]


def enqueue(store: Store, item_id: str, priority: int = 0, max_retries: int = 3,
            session_id: str | None = None):
    return store.insert_queue_item(item_id, "default", "echo", f"prompt {item_id}",
                                   session_id, priority, max_retries)


def log_events(store: Store, session_id: str, *typed: tuple[str, dict[str, Any]]) -> None:
    start = store.last_event_seq(session_id)
    rows = [(session_id, start + n, kind, orjson.dumps(data), time.time())
            for n, (kind, data) in enumerate(typed, start=1)]
    store.append_events(rows, {session_id: start + len(rows)})


def processing_item_with_turn(store: Store, item_id: str, turn_after: int):
    store.insert_session("s1", "echo", 1)
    enqueue(store, item_id, session_id="s1")
    claimed = store.claim_queue_item(time.time())
    assert claimed is not None and claimed.id == item_id
    return store.update_queue_item(item_id, turn_after=turn_after)


def test_claims_take_the_highest_priority_first_then_the_oldest(store: Store) -> None:
    enqueue(store, "low", priority=-5)
    enqueue(store, "first", priority=7)
    enqueue(store, "second", priority=7)
    enqueue(store, "middle", priority=0)
    order = [store.claim_queue_item(time.time()).id for _ in range(4)]
    assert order == ["first", "second", "middle", "low"]
    assert store.claim_queue_item(time.time()) is None


def test_a_claimed_item_is_processing_and_not_claimed_again(store: Store) -> None:
    enqueue(store, "only")
    claimed = store.claim_queue_item(time.time())
    assert claimed is not None and claimed.status == "processing" and claimed.started_at
    assert store.claim_queue_item(time.time()) is None


def test_an_item_is_not_claimed_before_its_next_attempt(store: Store) -> None:
    enqueue(store, "later")
    store.db.execute("UPDATE queue_items SET next_attempt_at = ?", (time.time() + 60,))
    assert store.claim_queue_item(time.time()) is None
    assert store.claim_queue_item(time.time() + 61) is not None


def test_only_a_pending_item_can_be_cancelled(store: Store) -> None:
    enqueue(store, "a")
    enqueue(store, "b")
    assert store.claim_queue_item(time.time()).id == "a"
    assert store.cancel_queue_item("default", "a") is None
    cancelled = store.cancel_queue_item("default", "b")
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.completed_at
    assert store.cancel_queue_item("default", "b") is None


def test_another_tenants_item_is_unknown(store: Store) -> None:
    enqueue(store, "mine")
    assert store.get_queue_item("other", "mine") is None
    assert store.cancel_queue_item("other", "mine") is None
    assert store.list_queue_items("other", None, 50) == []
    assert store.count_queue_items_by_status("other") == {}
    assert store.get_queue_item("default", "mine").status == "pending"


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    settings = QueueSettings(retry_base=5, retry_cap=300)
    assert [settings.backoff(n) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert settings.backoff(10_000) == 300


def test_a_restart_completes_an_item_whose_turn_logged_its_done(store: Store) -> None:
    processing_item_with_turn(store, "done-unmarked", turn_after=0)
    log_events(store, "s1", (events.SESSION_START, {}), (events.TURN_COMPLETE, {}),
               (events.DONE, {"sessionId": "s1", "status": "ok"}))
    assert service(store).recover() == 1
    item = store.get_queue_item("default", "done-unmarked")
    assert (item.status, item.retry_count, item.error) == ("completed", 0, None)
    assert item.completed_at is not None
    assert store.claim_queue_item(time.time() + 3600) is None  # it never runs again


def test_a_restart_retries_an_item_whose_turn_has_no_done_after_the_backoff(
    store: Store,
) -> None:
    processing_item_with_turn(store, "cut", turn_after=0)
    log_events(store, "s1", (events.SESSION_START, {}), (events.TEXT_DELTA, {"delta": "x"}))
    before = time.time()
    service(store, retry_base=2.0).recover()
    item = store.get_queue_item("default", "cut")
    assert (item.status, item.retry_count, item.error) == ("pending", 1, GATEWAY_STOPPED)
    assert before + 2.0 <= item.next_attempt_at <= time.time() + 2.0


def test_a_restart_fails_an_item_out_of_retries(store: Store) -> None:
    store.insert_session("s1", "echo", 1)
    enqueue(store, "last", max_retries=0, session_id="s1")
    store.claim_queue_item(time.time())
    service(store).recover()
    item = store.get_queue_item("default", "last")
    assert (item.status, item.error) == ("failed", GATEWAY_STOPPED)
    assert item.completed_at is not None


def test_a_done_belongs_to_the_turn_only_if_no_other_turn_started_before_it(
    store: Store,
) -> None:
    store.insert_session("s1", "echo", 1)
    log_events(store, "s1", (events.SESSION_START, {}),
               (events.SESSION_START, {}), (events.DONE, {"status": "ok"}))
    assert not turn_outcome(store, "s1", 0).finished
    assert turn_outcome(store, "s1", 1).finished


def test_a_turn_outcome_carries_its_status_and_error(store: Store) -> None:
    store.insert_session("s1", "echo", 1)
    log_events(store, "s1", (events.DONE, {"status": "ok"}),  # an earlier turn's
               (events.SESSION_START, {}), (events.ERROR, {"error": "model overloaded"}),
               (events.DONE, {"status": "error"}))
    outcome = turn_outcome(store, "s1", 1)
    assert (outcome.finished, outcome.status, outcome.error) == (
        True, "error", "model overloaded")


def test_a_database_of_an_earlier_schema_gains_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = apsw.Connection(str(path))
    for version, script in enumerate(MIGRATIONS[:QUEUE_MIGRATION], start=1):
        old.execute(script)
        old.execute(f"PRAGMA user_version={version}")
    old.execute("INSERT INTO sessions (id, agent, agent_version, status, created_at, "
                "updated_at) VALUES ('s1', 'echo', 1, 'active', 0, 0)")
    old.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.get_session("s1") is not None
    assert enqueue(store, "new").status == "pending"
