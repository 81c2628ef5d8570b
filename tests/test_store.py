"""The SQLite store: WAL, migrations by user_version, atomic batches."""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import pytest

from gateway.store import MIGRATIONS, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ash.db")


def test_database_uses_wal_and_normal_sync(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_schema_version_is_the_number_of_migrations(store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS)


def test_reopening_does_not_rerun_migrations(tmp_path: Path) -> None:
    Store(tmp_path / "ash.db").upsert_agent("a", "/x", "{}")
    again = Store(tmp_path / "ash.db")
    assert again.schema_version == len(MIGRATIONS)
    assert again.get_agent("a") is not None


def test_tables_exist(store: Store) -> None:
    tables = store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    names = {row[0] for row in tables}
    assert {"agents", "sessions", "sandboxes", "runners", "events"} <= names


def test_redeploy_bumps_agent_version(store: Store) -> None:
    assert store.upsert_agent("a", "/x", "{}").version == 1
    assert store.upsert_agent("a", "/x", '{"k": 1}').version == 2
    assert store.get_agent("a").config == '{"k": 1}'


def test_session_runner_id_is_null_for_local_sessions(store: Store) -> None:
    row = store.insert_session("s1", "a", 1)
    assert row.runner_id is None
    assert row.status == "starting"


def test_event_batch_advances_cursor(store: Store) -> None:
    store.insert_session("s1", "a", 1)
    store.append_events([("s1", 1, "text_delta", b"{}", 0.0), ("s1", 2, "done", b"{}", 0.0)],
                        {"s1": 2})
    assert [e.seq for e in store.events_after("s1", 0, 10)] == [1, 2]
    assert store.get_session("s1").last_event_seq == 2


def test_failed_event_batch_writes_nothing(store: Store) -> None:
    store.insert_session("s1", "a", 1)
    store.append_events([("s1", 1, "text_delta", b"{}", 0.0)], {"s1": 1})
    with pytest.raises(apsw.ConstraintError):
        store.append_events([("s1", 2, "text_delta", b"{}", 0.0),
                             ("s1", 1, "text_delta", b"{}", 0.0)], {"s1": 2})
    assert [e.seq for e in store.events_after("s1", 0, 10)] == [1]
    assert store.get_session("s1").last_event_seq == 1


def test_orphaned_local_sessions_are_paused(store: Store) -> None:
    for sid, status in [("a", "active"), ("b", "starting"), ("c", "ended"), ("d", "paused")]:
        store.insert_session(sid, "agent", 1)
        store.update_session(sid, status=status)
    assert store.pause_orphaned_local_sessions() == 2
    assert {sid: store.get_session(sid).status for sid in "abcd"} == {
        "a": "paused", "b": "paused", "c": "ended", "d": "paused"}


def test_list_sessions_filters_and_pages(store: Store) -> None:
    for index in range(5):
        store.insert_session(f"s{index}", "one" if index % 2 else "two", 1)
    assert len(store.list_sessions(agent="one")) == 2
    assert len(store.list_sessions(limit=2)) == 2
    assert len(store.list_sessions(limit=10, offset=4)) == 1
    assert store.list_sessions(status="active") == []


def test_expired_event_logs_of_ended_sessions_are_deleted(store: Store) -> None:
    for sid, status in [("old", "ended"), ("live", "active")]:
        store.insert_session(sid, "a", 1)
        store.append_events([(sid, 1, "done", b"{}", 0.0)], {sid: 1})
        store.update_session(sid, status=status)
    assert store.delete_expired_events(ended_before=0) == 0
    assert store.delete_expired_events(ended_before=time.time() + 1) == 1
    assert store.events_after("old", 0, 10) == []
    assert len(store.events_after("live", 0, 10)) == 1


def test_a_database_of_the_previous_schema_gains_parent_session_id(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = apsw.Connection(str(path))
    for version, script in enumerate(MIGRATIONS[:-1], start=1):
        old.execute(script)
        old.execute(f"PRAGMA user_version={version}")
    old.execute("INSERT INTO sessions (id, agent, agent_version, status, created_at, "
                "updated_at) VALUES ('s1', 'a', 1, 'active', 0, 0)")
    old.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.get_session("s1").parent_session_id is None


def test_insert_fork_copies_the_event_log_and_names_the_parent(store: Store) -> None:
    store.insert_session("parent", "a", 1)
    store.append_events([("parent", 1, "text_delta", b'{"t":1}', 0.0),
                         ("parent", 2, "done", b"{}", 0.0)], {"parent": 2})
    store.update_session("parent", turns=1)
    fork = store.insert_fork("child", store.get_session("parent"))
    assert (fork.parent_session_id, fork.status, fork.turns) == ("parent", "paused", 1)
    assert (fork.last_event_seq, fork.seq_reserved, fork.runner_id) == (2, 2, None)
    assert store.events_after("child", 0, 10) == store.events_after("parent", 0, 10)
    store.append_events([("child", 3, "done", b"{}", 0.0)], {"child": 3})
    assert [e.seq for e in store.events_after("parent", 0, 10)] == [1, 2]
