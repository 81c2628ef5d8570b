"""The gateway's database: apsw SQLite in WAL mode, schema by PRAGMA user_version.

Plain SQL, no ORM. Every method is a short synchronous call (tens of
microseconds), made on the event loop thread; multi-row changes run in one
transaction so a failure leaves nothing half-written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

BUSY_TIMEOUT_MS = 5000

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE agents (
        name        TEXT PRIMARY KEY,
        path        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        config      TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE runners (
        id              TEXT PRIMARY KEY,
        host            TEXT NOT NULL,
        port            INTEGER NOT NULL,
        max_sandboxes   INTEGER NOT NULL,
        active          INTEGER NOT NULL DEFAULT 0,
        warming         INTEGER NOT NULL DEFAULT 0,
        status          TEXT NOT NULL,
        registered_at   REAL NOT NULL,
        last_heartbeat  REAL NOT NULL
    );
    CREATE TABLE sessions (
        id              TEXT PRIMARY KEY,
        agent           TEXT NOT NULL,
        agent_version   INTEGER NOT NULL,
        status          TEXT NOT NULL,
        runner_id       TEXT,
        sandbox_id      TEXT,
        last_event_seq  INTEGER NOT NULL DEFAULT 0,
        turns           INTEGER NOT NULL DEFAULT 0,
        error           TEXT,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX sessions_by_agent ON sessions (agent, created_at);
    CREATE INDEX sessions_by_status ON sessions (status, created_at);
    CREATE INDEX sessions_by_runner ON sessions (runner_id, status);
    CREATE TABLE sandboxes (
        id          TEXT PRIMARY KEY,
        session_id  TEXT NOT NULL,
        runner_id   TEXT,
        pid         INTEGER,
        status      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        ended_at    REAL
    );
    CREATE INDEX sandboxes_by_session ON sandboxes (session_id);
    CREATE TABLE events (
        session_id  TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        type        TEXT NOT NULL,
        data        BLOB NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE settings (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    """,
    # Ids handed out up to here may have reached a client before their batch was
    # written: after a crash, numbering resumes above it, so no id is ever reused.
    "ALTER TABLE sessions ADD COLUMN seq_reserved INTEGER NOT NULL DEFAULT 0;",
    # The runner's seq_hint of the last event logged from the session's sandbox: a
    # gateway attaching again after a crash asks its runner for what came after it.
    "ALTER TABLE sessions ADD COLUMN runner_hint INTEGER NOT NULL DEFAULT 0;",
    # An agent's stable id (a UUIDv4), as the reference's clients require; agents
    # deployed before get a random one here (version nibble 4, variant 8-b).
    """
    ALTER TABLE agents ADD COLUMN id TEXT NOT NULL DEFAULT '';
    UPDATE agents SET id = lower(
        hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
        substr(hex(randomblob(2)), 2) || '-' ||
        substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2) || '-' ||
        hex(randomblob(6))
    );
    CREATE UNIQUE INDEX agents_by_id ON agents (id);
    """,
    # The session this one was forked from (POST /api/sessions/{id}/fork), if any.
    "ALTER TABLE sessions ADD COLUMN parent_session_id TEXT;",
    # Each turn's user message (GET /api/sessions/{id}/messages), keyed by the id of the
    # turn's `session_start` event: the agent's side of the conversation is in `events`.
    """
    CREATE TABLE prompts (
        session_id  TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        content     BLOB NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    """,
    # The session's own agent options (wire/session_config.py), as JSON; a fork copies them.
    "ALTER TABLE sessions ADD COLUMN config TEXT NOT NULL DEFAULT '{}';",
    # Prompts queued for the gateway's queue workers (gateway/queue.py). `turn_after` is the
    # session's last logged event id when an attempt's turn began: that turn's
    # `session_start` is the first after it, so a restart reads from the log whether the
    # turn finished. `created_session`: the worker created the session (and stops it after).
    """
    CREATE TABLE queue_items (
        id               TEXT PRIMARY KEY,
        tenant_id        TEXT NOT NULL,
        session_id       TEXT,
        agent_name       TEXT NOT NULL,
        prompt           TEXT NOT NULL,
        status           TEXT NOT NULL,
        priority         INTEGER NOT NULL,
        retry_count      INTEGER NOT NULL DEFAULT 0,
        max_retries      INTEGER NOT NULL,
        error            TEXT,
        created_at       REAL NOT NULL,
        started_at       REAL,
        completed_at     REAL,
        next_attempt_at  REAL NOT NULL,
        turn_after       INTEGER,
        created_session  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX queue_items_ready ON queue_items (status, priority DESC, created_at);
    CREATE INDEX queue_items_by_tenant ON queue_items (tenant_id, created_at);
    """,
    # Usage metering (GET /api/usage): a row per figure of a finished turn (tokens, tool
    # calls, one message, compute seconds), written in the batch that logs the turn's end.
    # NUMERIC keeps token counts integers and compute seconds fractional.
    """
    CREATE TABLE usage_events (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        session_id  TEXT NOT NULL,
        agent_name  TEXT NOT NULL,
        event_type  TEXT NOT NULL,
        value       NUMERIC NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE INDEX usage_by_tenant ON usage_events (tenant_id, created_at);
    CREATE INDEX usage_by_session ON usage_events (tenant_id, session_id, created_at);
    """,
    # Attachments (POST /api/sessions/{id}/attachments): metadata and the bytes, kept by the
    # gateway so a download works once the session's sandbox is gone.
    """
    CREATE TABLE attachments (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        session_id  TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        filename    TEXT NOT NULL,
        mime_type   TEXT NOT NULL,
        size        INTEGER NOT NULL,
        data        BLOB NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE INDEX attachments_by_session ON attachments (tenant_id, session_id, created_at);
    """,
    # Tenants: every agent and session belongs to one (existing rows to the default
    # tenant); an agent's name is unique within its tenant, so the table is rebuilt with
    # (tenant_id, name) as its key. API keys are kept as HMACs (gateway/auth.py).
    """
    CREATE TABLE agents_by_tenant (
        tenant_id   TEXT NOT NULL DEFAULT 'default',
        name        TEXT NOT NULL,
        path        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        config      TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        id          TEXT NOT NULL,
        PRIMARY KEY (tenant_id, name)
    );
    INSERT INTO agents_by_tenant (tenant_id, name, path, version, config, created_at,
                                  updated_at, id)
        SELECT 'default', name, path, version, config, created_at, updated_at, id FROM agents;
    DROP TABLE agents;
    ALTER TABLE agents_by_tenant RENAME TO agents;
    CREATE UNIQUE INDEX agents_by_id ON agents (id);
    ALTER TABLE sessions ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX sessions_by_tenant ON sessions (tenant_id, created_at);
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        label       TEXT NOT NULL DEFAULT '',
        key_prefix  TEXT NOT NULL,
        hmac        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX api_keys_by_hmac ON api_keys (hmac);
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);
    """,
    # Model credentials (gateway/credentials.py): `secret` is the key sealed with
    # AES-256-GCM under ASH_CREDENTIAL_KEY, never the key itself. A session created with
    # one is linked to it, so a cold resume sends it to the runner again.
    """
    CREATE TABLE credentials (
        id            TEXT PRIMARY KEY,
        tenant_id     TEXT NOT NULL,
        type          TEXT NOT NULL,
        label         TEXT,
        secret        BLOB NOT NULL,
        active        INTEGER NOT NULL DEFAULT 1,
        created_at    REAL NOT NULL,
        last_used_at  REAL
    );
    CREATE INDEX credentials_by_tenant ON credentials (tenant_id, created_at);
    CREATE TABLE session_credentials (
        session_id     TEXT PRIMARY KEY,
        tenant_id      TEXT NOT NULL,
        credential_id  TEXT NOT NULL
    );
    """,
    # Agent versions (GET/POST /api/agents/{name}/versions): numbered per agent, at most
    # one active per agent; the active one's system prompt is what a new session runs.
    """
    CREATE TABLE agent_versions (
        id              TEXT PRIMARY KEY,
        tenant_id       TEXT NOT NULL,
        agent_name      TEXT NOT NULL,
        version_number  INTEGER NOT NULL,
        name            TEXT NOT NULL,
        system_prompt   TEXT,
        release_notes   TEXT,
        is_active       INTEGER NOT NULL DEFAULT 0,
        knowledge_files TEXT,
        created_by      TEXT,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        UNIQUE (tenant_id, agent_name, version_number)
    );
    """,
)

SESSION_LIVE_STATUSES = ("starting", "active", "paused", "stopped", "error")
DEFAULT_TENANT = "default"
"""The operator's tenant: ASH_API_KEY's, and the owner of every row made before tenants."""


@dataclass(frozen=True, slots=True)
class AgentRow:
    name: str
    path: str
    version: int
    config: str
    created_at: float
    updated_at: float
    id: str = ""
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class CredentialRow:
    id: str
    tenant_id: str
    type: str
    label: str | None
    secret: bytes = field(repr=False)
    active: bool
    created_at: float
    last_used_at: float | None


_CREDENTIAL_COLUMNS = ("id, tenant_id, type, label, secret, active, created_at, "
                       "last_used_at")


def _credential(row: tuple[Any, ...]) -> CredentialRow:
    values = list(row)
    values[5] = bool(values[5])
    return CredentialRow(*values)


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    agent: str
    agent_version: int
    status: str
    runner_id: str | None
    sandbox_id: str | None
    last_event_seq: int
    turns: int
    error: str | None
    created_at: float
    updated_at: float
    seq_reserved: int = 0
    runner_hint: int = 0
    parent_session_id: str | None = None
    config: str = "{}"
    """The session's options as JSON (`wire.session_config`)."""
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """A logged event or a turn's user message (`type` "prompt"), with its time."""

    seq: int
    type: str
    data: bytes
    created_at: float


PROMPT = "prompt"
"""The `HistoryRow.type` of a turn's user message."""


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    tenant_id: str
    label: str
    key_prefix: str
    hmac: str
    """HMAC-SHA256 of the key under the server's key secret, hex: the key itself is never
    stored."""
    created_at: float
    revoked: int


@dataclass(frozen=True, slots=True)
class RunnerRow:
    id: str
    host: str
    port: int
    max_sandboxes: int
    active: int
    warming: int
    status: str
    registered_at: float
    last_heartbeat: float


@dataclass(frozen=True, slots=True)
class QueueRow:
    id: str
    tenant_id: str
    session_id: str | None
    agent_name: str
    prompt: str
    status: str
    priority: int
    retry_count: int
    max_retries: int
    error: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    next_attempt_at: float
    turn_after: int | None
    created_session: int


_QUEUE_COLUMNS = (
    "id, tenant_id, session_id, agent_name, prompt, status, priority, retry_count, "
    "max_retries, error, created_at, started_at, completed_at, next_attempt_at, turn_after, "
    "created_session"
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One usage figure of a turn (`gateway.usage`)."""

    id: str
    tenant_id: str
    session_id: str
    agent_name: str
    event_type: str
    value: float
    created_at: float


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which usage rows a query covers; None leaves a bound open."""

    tenant_id: str
    session_id: str | None = None
    agent_name: str | None = None
    after: float | None = None
    before: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["tenant_id = ?"], [self.tenant_id]
        for clause, value in (("session_id = ?", self.session_id),
                              ("agent_name = ?", self.agent_name),
                              ("created_at > ?", self.after),
                              ("created_at < ?", self.before)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    """An attachment's metadata (its bytes are read apart: `attachment_data`)."""

    id: str
    tenant_id: str
    session_id: str
    message_id: str
    filename: str
    mime_type: str
    size: int
    created_at: float


_SESSION_COLUMNS = (
    "id, agent, agent_version, status, runner_id, sandbox_id, last_event_seq, turns, error, "
    "created_at, updated_at, seq_reserved, runner_hint, parent_session_id, config, tenant_id"
)
_AGENT_COLUMNS = "name, path, version, config, created_at, updated_at, id, tenant_id"
_API_KEY_COLUMNS = "id, tenant_id, label, key_prefix, hmac, created_at, revoked"
_ATTACHMENT_COLUMNS = (
    "id, tenant_id, session_id, message_id, filename, mime_type, size, created_at"
)
_RUNNER_COLUMNS = (
    "id, host, port, max_sandboxes, active, warming, status, registered_at, last_heartbeat"
)


@dataclass(frozen=True, slots=True)
class AgentVersionRow:
    id: str
    tenant_id: str
    agent_name: str
    version_number: int
    name: str
    system_prompt: str | None
    release_notes: str | None
    is_active: int
    knowledge_files: str | None
    """A JSON array of strings, or None."""
    created_by: str | None
    created_at: float
    updated_at: float


_VERSION_COLUMNS = (
    "id, tenant_id, agent_name, version_number, name, system_prompt, release_notes, "
    "is_active, knowledge_files, created_by, created_at, updated_at"
)
VERSION_EDITABLE = ("name", "system_prompt", "release_notes", "knowledge_files")


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.db = apsw.Connection(self.path)
        self.db.set_busy_timeout(BUSY_TIMEOUT_MS)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        current = self.db.execute("PRAGMA user_version").fetchone()[0]
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.db:
                self.db.execute(script)
                self.db.execute(f"PRAGMA user_version={version}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    # settings

    def get_setting(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # agents (the name is unique within a tenant)

    def upsert_agent(self, name: str, path: str, config: str,
                     tenant_id: str = DEFAULT_TENANT) -> AgentRow:
        now = time.time()
        row = self.db.execute(
            f"INSERT INTO agents (tenant_id, name, path, version, config, created_at, "
            f"updated_at, id) VALUES (?, ?, ?, 1, ?, ?, ?, ?) "
            f"ON CONFLICT (tenant_id, name) DO UPDATE SET path = excluded.path, "
            f"config = excluded.config, version = agents.version + 1, "
            f"updated_at = excluded.updated_at RETURNING {_AGENT_COLUMNS}",
            (tenant_id, name, path, config, now, now, str(uuid.uuid4())),
        ).fetchone()
        return AgentRow(*row)

    def get_agent(self, name: str, tenant_id: str = DEFAULT_TENANT) -> AgentRow | None:
        row = self.db.execute(
            f"SELECT {_AGENT_COLUMNS} FROM agents WHERE tenant_id = ? AND name = ?",
            (tenant_id, name),
        ).fetchone()
        return AgentRow(*row) if row else None

    def list_agents(self, tenant_id: str = DEFAULT_TENANT) -> list[AgentRow]:
        rows = self.db.execute(
            f"SELECT {_AGENT_COLUMNS} FROM agents WHERE tenant_id = ? ORDER BY name",
            (tenant_id,))
        return [AgentRow(*row) for row in rows]

    def delete_agent(self, name: str, tenant_id: str = DEFAULT_TENANT) -> bool:
        self.db.execute("DELETE FROM agents WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        return self.db.changes() > 0

    def count_live_sessions_of_agent(self, name: str, tenant_id: str = DEFAULT_TENANT) -> int:
        return self.db.execute(
            "SELECT count(*) FROM sessions WHERE tenant_id = ? AND agent = ? "
            "AND status != 'ended'", (tenant_id, name)
        ).fetchone()[0]

    # sessions

    def insert_session(self, session_id: str, agent: str, agent_version: int,
                       runner_id: str | None = None, config: str = "{}",
                       tenant_id: str = DEFAULT_TENANT) -> SessionRow:
        now = time.time()
        row = self.db.execute(
            f"INSERT INTO sessions (id, agent, agent_version, status, runner_id, created_at, "
            f"updated_at, config, tenant_id) VALUES (?, ?, ?, 'starting', ?, ?, ?, ?, ?) "
            f"RETURNING {_SESSION_COLUMNS}",
            (session_id, agent, agent_version, runner_id, now, now, config, tenant_id),
        ).fetchone()
        return SessionRow(*row)

    def insert_fork(self, fork_id: str, parent: SessionRow) -> SessionRow:
        """A paused copy of `parent` (its config too) under a new id, its event log copied
        with it (same ids, so the fork's history reads as the parent's up to the fork), in
        one transaction."""
        now = time.time()
        with self.db:
            row = self.db.execute(
                f"INSERT INTO sessions (id, agent, agent_version, status, runner_id, "
                f"last_event_seq, seq_reserved, turns, created_at, updated_at, "
                f"parent_session_id, config, tenant_id) "
                f"SELECT ?, agent, agent_version, 'paused', NULL, "
                f"(SELECT coalesce(max(seq), 0) FROM events WHERE session_id = sessions.id), "
                f"(SELECT coalesce(max(seq), 0) FROM events WHERE session_id = sessions.id), "
                f"turns, ?, ?, id, config, tenant_id FROM sessions WHERE id = ? "
                f"RETURNING {_SESSION_COLUMNS}",
                (fork_id, now, now, parent.id),
            ).fetchone()
            self.db.execute(
                "INSERT INTO events (session_id, seq, type, data, created_at) "
                "SELECT ?, seq, type, data, created_at FROM events WHERE session_id = ?",
                (fork_id, parent.id),
            )
            self.db.execute(
                "INSERT INTO prompts (session_id, seq, content, created_at) "
                "SELECT ?, seq, content, created_at FROM prompts WHERE session_id = ?",
                (fork_id, parent.id),
            )
        return SessionRow(*row)

    def get_session(self, session_id: str, tenant_id: str | None = None) -> SessionRow | None:
        """The session, if it exists (and, given `tenant_id`, is that tenant's)."""
        if tenant_id is None:
            row = self.db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        else:
            row = self.db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ? AND tenant_id = ?",
                (session_id, tenant_id),
            ).fetchone()
        return SessionRow(*row) if row else None

    def list_sessions(self, *, agent: str | None = None, status: str | None = None,
                      limit: int = 50, offset: int = 0,
                      tenant_id: str | None = None) -> list[SessionRow]:
        clauses: list[str] = []
        params: list[Any] = []
        if tenant_id is not None:
            clauses.append("tenant_id = ?")
            params.append(tenant_id)
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions {where} "
            f"ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [SessionRow(*row) for row in rows]

    def update_session(self, session_id: str, **fields: Any) -> SessionRow | None:
        """Set the given columns (and `updated_at`); returns the new row."""
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in fields)
        row = self.db.execute(
            f"UPDATE sessions SET {assignments} WHERE id = ? RETURNING {_SESSION_COLUMNS}",
            (*fields.values(), session_id),
        ).fetchone()
        return SessionRow(*row) if row else None

    def delete_session(self, session_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            self.db.execute("DELETE FROM prompts WHERE session_id = ?", (session_id,))
            self.db.execute("DELETE FROM sandboxes WHERE session_id = ?", (session_id,))
            self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def count_sessions_by_status(self, tenant_id: str | None = None) -> dict[str, int]:
        """Per status, one tenant's sessions (every tenant's: None, as /health counts)."""
        if tenant_id is None:
            rows = self.db.execute("SELECT status, count(*) FROM sessions GROUP BY status")
        else:
            rows = self.db.execute("SELECT status, count(*) FROM sessions WHERE tenant_id = ? "
                                   "GROUP BY status", (tenant_id,))
        return {status: count for status, count in rows}

    def pause_orphaned_local_sessions(self) -> int:
        """After a restart, in-process sandboxes are gone: their sessions become paused."""
        with self.db:
            self.db.execute(
                "UPDATE sessions SET status = 'paused', sandbox_id = NULL, updated_at = ? "
                "WHERE runner_id IS NULL AND status IN ('starting', 'active')",
                (time.time(),),
            )
            count = self.db.changes()
            self.db.execute(
                "UPDATE sandboxes SET status = 'dead', ended_at = ? "
                "WHERE runner_id IS NULL AND status = 'live'",
                (time.time(),),
            )
        return count

    # sandboxes

    def record_sandbox(self, sandbox_id: str, session_id: str, runner_id: str | None,
                       pid: int) -> None:
        with self.db:
            self.db.execute(
                "UPDATE sandboxes SET status = 'dead', ended_at = ? "
                "WHERE session_id = ? AND status = 'live'",
                (time.time(), session_id),
            )
            self.db.execute(
                "INSERT INTO sandboxes (id, session_id, runner_id, pid, status, created_at) "
                "VALUES (?, ?, ?, ?, 'live', ?) "
                # a runner hands back a sandbox that outlived the gateway's stream to it
                "ON CONFLICT (id) DO UPDATE SET status = 'live', ended_at = NULL",
                (sandbox_id, session_id, runner_id, pid, time.time()),
            )

    def end_sandbox(self, sandbox_id: str, status: str = "destroyed") -> None:
        self.db.execute(
            "UPDATE sandboxes SET status = ?, ended_at = ? WHERE id = ? AND status = 'live'",
            (status, time.time(), sandbox_id),
        )

    def count_live_sandboxes(self) -> int:
        return self.db.execute(
            "SELECT count(*) FROM sandboxes WHERE status = 'live'"
        ).fetchone()[0]

    # events

    def append_events(self, rows: Sequence[tuple[str, int, str, bytes, float]],
                      last_seq_by_session: dict[str, int],
                      last_hint_by_session: dict[str, int] | None = None,
                      usage: Sequence[UsageRow] = (),
                      prompts: Sequence[tuple[str, int, bytes, float]] = ()) -> None:
        """Write a batch of events (with the user messages of the turns it starts and the
        usage of the turns it ends) and advance each session's cursors, in one
        transaction."""
        with self.db:
            self.db.executemany(
                "INSERT INTO events (session_id, seq, type, data, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self.db.executemany(
                "UPDATE sessions SET last_event_seq = ? WHERE id = ? AND last_event_seq < ?",
                [(seq, sid, seq) for sid, seq in last_seq_by_session.items()],
            )
            if last_hint_by_session:
                self.db.executemany(
                    "UPDATE sessions SET runner_hint = ? WHERE id = ?",
                    [(hint, sid) for sid, hint in last_hint_by_session.items()],
                )
            if usage:
                self._insert_usage(usage)
            if prompts:
                self.db.executemany(
                    "INSERT OR REPLACE INTO prompts (session_id, seq, content, created_at) "
                    "VALUES (?, ?, ?, ?)", prompts)

    def events_after(self, session_id: str, after: int, limit: int) -> list[EventRow]:
        rows = self.db.execute(
            "SELECT seq, type, data FROM events WHERE session_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (session_id, after, limit),
        )
        return [EventRow(*row) for row in rows]

    def history_after(self, session_id: str, after: int, event_types: Sequence[str], *,
                      prompts: bool = False) -> Iterator[HistoryRow]:
        """The session's logged events of `event_types` after `after` (with `prompts`, its
        user messages among them), in id order, read lazily: a caller stops when it has
        enough."""
        marks = ", ".join("?" for _ in event_types)
        sql = (f"SELECT seq, type, data, created_at FROM events "
               f"WHERE session_id = ? AND seq > ? AND type IN ({marks})")
        params: list[Any] = [session_id, after, *event_types]
        if prompts:
            sql += (f" UNION ALL SELECT seq, '{PROMPT}', content, created_at FROM prompts "
                    f"WHERE session_id = ? AND seq > ?")
            params += [session_id, after]
        rows = self.db.execute(sql + " ORDER BY 1", params)
        return (HistoryRow(*row) for row in rows)

    def reserve_seq(self, session_id: str, upto: int) -> None:
        self.db.execute("UPDATE sessions SET seq_reserved = ? WHERE id = ?", (upto, session_id))

    def release_seq_reservations(self) -> None:
        """On a clean stop every handed-out id is logged: numbering may go on from there."""
        self.db.execute("UPDATE sessions SET seq_reserved = last_event_seq "
                        "WHERE seq_reserved > last_event_seq")

    def delete_expired_events(self, ended_before: float) -> int:
        """Delete the events of sessions that ended before `ended_before` (unix time)."""
        with self.db:
            self.db.execute(
                "DELETE FROM events WHERE session_id IN "
                "(SELECT id FROM sessions WHERE status = 'ended' AND updated_at < ?)",
                (ended_before,),
            )
            deleted = self.db.changes()
            self.db.execute(
                "DELETE FROM prompts WHERE session_id IN "
                "(SELECT id FROM sessions WHERE status = 'ended' AND updated_at < ?)",
                (ended_before,),
            )
            return deleted

    def last_event_seq(self, session_id: str) -> int:
        row = self.db.execute(
            "SELECT max(seq) FROM events WHERE session_id = ?", (session_id,)
        ).fetchone()
        return row[0] or 0

    # runners (coordinator mode)

    def upsert_runner(self, runner_id: str, host: str, port: int, max_sandboxes: int,
                      status: str) -> RunnerRow:
        """Record a (re-)registration: a runner that registers again replaces its old row."""
        now = time.time()
        row = self.db.execute(
            f"INSERT INTO runners ({_RUNNER_COLUMNS}) VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?) "
            f"ON CONFLICT (id) DO UPDATE SET host = excluded.host, port = excluded.port, "
            f"max_sandboxes = excluded.max_sandboxes, active = 0, warming = 0, "
            f"status = excluded.status, registered_at = excluded.registered_at, "
            f"last_heartbeat = excluded.last_heartbeat RETURNING {_RUNNER_COLUMNS}",
            (runner_id, host, port, max_sandboxes, status, now, now),
        ).fetchone()
        return RunnerRow(*row)

    def record_heartbeat(self, runner_id: str, active: int, warming: int) -> None:
        self.db.execute(
            "UPDATE runners SET active = ?, warming = ?, last_heartbeat = ? WHERE id = ?",
            (active, warming, time.time(), runner_id),
        )

    def set_runner_status(self, runner_id: str, status: str) -> None:
        self.db.execute("UPDATE runners SET status = ? WHERE id = ?", (status, runner_id))

    def list_runners(self) -> list[RunnerRow]:
        rows = self.db.execute(f"SELECT {_RUNNER_COLUMNS} FROM runners ORDER BY id")
        return [RunnerRow(*row) for row in rows]

    def pause_runner_sessions(self, runner_id: str, error: str) -> int:
        """The runner is gone: all its active sessions become paused, in one statement.

        Their sandboxes are marked dead with it; a resume restores each session's
        stored state on a healthy runner. Returns how many sessions were paused.
        """
        now = time.time()
        with self.db:
            self.db.execute(
                "UPDATE sessions SET status = 'paused', sandbox_id = NULL, error = ?, "
                "updated_at = ? WHERE runner_id = ? AND status = 'active'",
                (error, now, runner_id),
            )
            paused = self.db.changes()
            self.db.execute(
                "UPDATE sandboxes SET status = 'dead', ended_at = ? "
                "WHERE runner_id = ? AND status = 'live'",
                (now, runner_id),
            )
        return paused

    # queue (gateway/queue.py): every route's query names its tenant; the workers' do not

    def insert_queue_item(self, item_id: str, tenant_id: str, agent_name: str, prompt: str,
                          session_id: str | None, priority: int,
                          max_retries: int) -> QueueRow:
        now = time.time()
        row = self.db.execute(
            f"INSERT INTO queue_items (id, tenant_id, session_id, agent_name, prompt, status, "
            f"priority, max_retries, created_at, next_attempt_at) "
            f"VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) RETURNING {_QUEUE_COLUMNS}",
            (item_id, tenant_id, session_id, agent_name, prompt, priority, max_retries, now,
             now),
        ).fetchone()
        return QueueRow(*row)

    def get_queue_item(self, tenant_id: str, item_id: str) -> QueueRow | None:
        row = self.db.execute(
            f"SELECT {_QUEUE_COLUMNS} FROM queue_items WHERE id = ? AND tenant_id = ?",
            (item_id, tenant_id),
        ).fetchone()
        return QueueRow(*row) if row else None

    def list_queue_items(self, tenant_id: str, status: str | None,
                         limit: int) -> list[QueueRow]:
        """The tenant's items, newest first."""
        clause = "AND status = ?" if status is not None else ""
        params: tuple[Any, ...] = (tenant_id, status) if status is not None else (tenant_id,)
        rows = self.db.execute(
            f"SELECT {_QUEUE_COLUMNS} FROM queue_items WHERE tenant_id = ? {clause} "
            f"ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [QueueRow(*row) for row in rows]

    def count_queue_items_by_status(self, tenant_id: str) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT status, count(*) FROM queue_items WHERE tenant_id = ? GROUP BY status",
            (tenant_id,),
        )
        return {status: count for status, count in rows}

    def cancel_queue_item(self, tenant_id: str, item_id: str) -> QueueRow | None:
        """Cancel the item if it is still pending; None when it is not (or is not there)."""
        row = self.db.execute(
            f"UPDATE queue_items SET status = 'cancelled', completed_at = ? "
            f"WHERE id = ? AND tenant_id = ? AND status = 'pending' RETURNING {_QUEUE_COLUMNS}",
            (time.time(), item_id, tenant_id),
        ).fetchone()
        return QueueRow(*row) if row else None

    def claim_queue_item(self, now: float) -> QueueRow | None:
        """Take the next due pending item (highest priority, then oldest) and mark it
        processing, in one statement: two workers never claim the same item."""
        row = self.db.execute(
            f"UPDATE queue_items SET status = 'processing', started_at = ? "
            f"WHERE rowid = (SELECT rowid FROM queue_items "
            f"WHERE status = 'pending' AND next_attempt_at <= ? "
            f"ORDER BY priority DESC, created_at, rowid LIMIT 1) AND status = 'pending' "
            f"RETURNING {_QUEUE_COLUMNS}",
            (now, now),
        ).fetchone()
        return QueueRow(*row) if row else None

    def update_queue_item(self, item_id: str, **fields: Any) -> QueueRow | None:
        """Set the given columns of an item a worker holds (status `processing`)."""
        assignments = ", ".join(f"{column} = ?" for column in fields)
        row = self.db.execute(
            f"UPDATE queue_items SET {assignments} WHERE id = ? AND status = 'processing' "
            f"RETURNING {_QUEUE_COLUMNS}",
            (*fields.values(), item_id),
        ).fetchone()
        return QueueRow(*row) if row else None

    def processing_queue_items(self) -> list[QueueRow]:
        rows = self.db.execute(
            f"SELECT {_QUEUE_COLUMNS} FROM queue_items WHERE status = 'processing' "
            f"ORDER BY created_at, rowid"
        )
        return [QueueRow(*row) for row in rows]

    def next_queue_attempt_at(self) -> float | None:
        """When the soonest pending item is due (None: nothing pending)."""
        return self.db.execute(
            "SELECT min(next_attempt_at) FROM queue_items WHERE status = 'pending'"
        ).fetchone()[0]

    # usage and attachments

    def _insert_usage(self, rows: Sequence[UsageRow]) -> None:
        self.db.executemany(
            "INSERT INTO usage_events (id, tenant_id, session_id, agent_name, event_type, "
            "value, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r.id, r.tenant_id, r.session_id, r.agent_name, r.event_type, r.value,
              r.created_at) for r in rows],
        )

    def list_usage(self, where: UsageFilter, limit: int) -> list[UsageRow]:
        """The newest `limit` usage rows `where` covers, newest first."""
        clause, params = where.where()
        rows = self.db.execute(
            f"SELECT id, tenant_id, session_id, agent_name, event_type, value, created_at "
            f"FROM usage_events WHERE {clause} ORDER BY created_at DESC, id LIMIT ?",
            (*params, limit),
        )
        return [UsageRow(*row) for row in rows]

    def usage_totals(self, where: UsageFilter) -> dict[str, float]:
        """Each usage type's sum over the rows `where` covers."""
        clause, params = where.where()
        rows = self.db.execute(
            f"SELECT event_type, sum(value) FROM usage_events WHERE {clause} "
            f"GROUP BY event_type", params)
        return {event_type: total for event_type, total in rows}

    def insert_attachment(self, row: AttachmentRow, data: bytes) -> None:
        self.db.execute(
            "INSERT INTO attachments (id, tenant_id, session_id, message_id, filename, "
            "mime_type, size, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.id, row.tenant_id, row.session_id, row.message_id, row.filename,
             row.mime_type, row.size, data, row.created_at),
        )

    def list_attachments(self, tenant_id: str, session_id: str) -> list[AttachmentRow]:
        rows = self.db.execute(
            f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments "
            f"WHERE tenant_id = ? AND session_id = ? ORDER BY created_at, id",
            (tenant_id, session_id),
        )
        return [AttachmentRow(*row) for row in rows]

    def get_attachment(self, tenant_id: str, attachment_id: str) -> AttachmentRow | None:
        row = self.db.execute(
            f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE tenant_id = ? AND id = ?",
            (tenant_id, attachment_id),
        ).fetchone()
        return AttachmentRow(*row) if row else None

    def attachment_data(self, tenant_id: str, attachment_id: str) -> bytes | None:
        row = self.db.execute(
            "SELECT data FROM attachments WHERE tenant_id = ? AND id = ?",
            (tenant_id, attachment_id),
        ).fetchone()
        return row[0] if row else None

    def delete_attachment(self, tenant_id: str, attachment_id: str) -> bool:
        self.db.execute("DELETE FROM attachments WHERE tenant_id = ? AND id = ?",
                        (tenant_id, attachment_id))

    # tenants and API keys (gateway/auth.py)

    def insert_api_key(self, key_id: str, tenant_id: str, label: str, key_prefix: str,
                       digest: str) -> ApiKeyRow:
        row = self.db.execute(
            f"INSERT INTO api_keys ({_API_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0) "
            f"ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, "
            f"label = excluded.label, key_prefix = excluded.key_prefix, hmac = excluded.hmac, "
            f"revoked = 0 RETURNING {_API_KEY_COLUMNS}",
            (key_id, tenant_id, label, key_prefix, digest, time.time()),
        ).fetchone()
        return ApiKeyRow(*row)

    def get_api_key(self, key_id: str) -> ApiKeyRow | None:
        row = self.db.execute(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone()
        return ApiKeyRow(*row) if row else None

    def find_api_key(self, digest: str) -> ApiKeyRow | None:
        """The live key whose HMAC is `digest` (one lookup in the unique index)."""
        row = self.db.execute(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE hmac = ? AND revoked = 0",
            (digest,),
        ).fetchone()
        return ApiKeyRow(*row) if row else None

    def list_api_keys(self, tenant_id: str) -> list[ApiKeyRow]:
        rows = self.db.execute(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ? AND revoked = 0 "
            f"ORDER BY created_at, id", (tenant_id,))
        return [ApiKeyRow(*row) for row in rows]

    def revoke_api_key(self, key_id: str, tenant_id: str) -> bool:
        self.db.execute("UPDATE api_keys SET revoked = 1 WHERE id = ? AND tenant_id = ? "
                        "AND revoked = 0", (key_id, tenant_id))
        return self.db.changes() > 0

    # credentials (gateway/credentials.py): every query is scoped by tenant

    def insert_credential(self, credential_id: str, tenant_id: str, kind: str,
                          label: str | None, secret: bytes) -> CredentialRow:
        row = self.db.execute(
            f"INSERT INTO credentials (id, tenant_id, type, label, secret, created_at) "
            f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_CREDENTIAL_COLUMNS}",
            (credential_id, tenant_id, kind, label, secret, time.time()),
        ).fetchone()
        return _credential(row)

    def get_credential(self, tenant_id: str, credential_id: str) -> CredentialRow | None:
        row = self.db.execute(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE id = ? AND tenant_id = ?",
            (credential_id, tenant_id),
        ).fetchone()
        return _credential(row) if row else None

    def list_credentials(self, tenant_id: str) -> list[CredentialRow]:
        rows = self.db.execute(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE tenant_id = ? "
            f"ORDER BY created_at DESC, id", (tenant_id,))
        return [_credential(row) for row in rows]

    def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        self.db.execute("DELETE FROM credentials WHERE id = ? AND tenant_id = ?",
                        (credential_id, tenant_id))
        return self.db.changes() > 0

    def touch_credential(self, credential_id: str) -> None:
        self.db.execute("UPDATE credentials SET last_used_at = ? WHERE id = ?",
                        (time.time(), credential_id))

    def link_session_credential(self, session_id: str, tenant_id: str,
                                credential_id: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO session_credentials (session_id, tenant_id, credential_id) "
            "VALUES (?, ?, ?)", (session_id, tenant_id, credential_id))

    def session_credential(self, session_id: str) -> tuple[str, str] | None:
        """The (tenant id, credential id) the session was created with, if any."""
        row = self.db.execute(
            "SELECT tenant_id, credential_id FROM session_credentials WHERE session_id = ?",
            (session_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def unlink_session_credential(self, session_id: str) -> None:
        self.db.execute("DELETE FROM session_credentials WHERE session_id = ?", (session_id,))

    # agent versions

    def insert_agent_version(self, tenant_id: str, agent_name: str, fields: dict[str, Any],
                             created_by: str | None = None) -> AgentVersionRow:
        """A new version numbered after the agent's last; `fields` holds `name`,
        `system_prompt`, `release_notes`, `knowledge_files` (JSON text or None)."""
        now = time.time()
        with self.db:
            number = self.db.execute(
                "SELECT coalesce(max(version_number), 0) + 1 FROM agent_versions "
                "WHERE tenant_id = ? AND agent_name = ?", (tenant_id, agent_name),
            ).fetchone()[0]
            row = self.db.execute(
                f"INSERT INTO agent_versions (id, tenant_id, agent_name, version_number, name, "
                f"system_prompt, release_notes, knowledge_files, created_by, created_at, "
                f"updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"RETURNING {_VERSION_COLUMNS}",
                (str(uuid.uuid4()), tenant_id, agent_name, number,
                 fields.get("name") or f"v{number}", fields.get("system_prompt"),
                 fields.get("release_notes"), fields.get("knowledge_files"), created_by,
                 now, now),
            ).fetchone()
        return AgentVersionRow(*row)

    def list_agent_versions(self, tenant_id: str, agent_name: str) -> list[AgentVersionRow]:
        rows = self.db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM agent_versions WHERE tenant_id = ? AND "
            f"agent_name = ? ORDER BY version_number", (tenant_id, agent_name))
        return [AgentVersionRow(*row) for row in rows]

    def get_agent_version(self, tenant_id: str, agent_name: str,
                          number: int | None = None, *, version_id: str | None = None
                          ) -> AgentVersionRow | None:
        """By number, or by id (`cloneFrom` may give either)."""
        column, key = ("version_number", number) if version_id is None else ("id", version_id)
        row = self.db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM agent_versions WHERE tenant_id = ? AND "
            f"agent_name = ? AND {column} = ?", (tenant_id, agent_name, key)).fetchone()
        return AgentVersionRow(*row) if row else None

    def active_agent_version(self, tenant_id: str, agent_name: str) -> AgentVersionRow | None:
        row = self.db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM agent_versions WHERE tenant_id = ? AND "
            f"agent_name = ? AND is_active = 1", (tenant_id, agent_name)).fetchone()
        return AgentVersionRow(*row) if row else None

    def update_agent_version(self, tenant_id: str, agent_name: str, number: int,
                             fields: dict[str, Any]) -> AgentVersionRow | None:
        """Set the given columns (`name`, `system_prompt`, `release_notes`,
        `knowledge_files`)."""
        assert set(fields) <= set(VERSION_EDITABLE), fields
        assignments = "".join(f"{column} = ?, " for column in fields)
        row = self.db.execute(
            f"UPDATE agent_versions SET {assignments}updated_at = ? WHERE tenant_id = ? AND "
            f"agent_name = ? AND version_number = ? RETURNING {_VERSION_COLUMNS}",
            (*fields.values(), time.time(), tenant_id, agent_name, number)).fetchone()
        return AgentVersionRow(*row) if row else None

    def activate_agent_version(self, tenant_id: str, agent_name: str, number: int) -> bool:
        """Make this version the agent's one active version, in one transaction."""
        now = time.time()
        with self.db:
            if self.get_agent_version(tenant_id, agent_name, number) is None:
                return False
            self.db.execute(
                "UPDATE agent_versions SET is_active = (version_number = ?), updated_at = ? "
                "WHERE tenant_id = ? AND agent_name = ? AND "
                "(is_active = 1 OR version_number = ?)",
                (number, now, tenant_id, agent_name, number))
        return True

    def delete_agent_version(self, tenant_id: str, agent_name: str, number: int) -> bool:
        self.db.execute(
            "DELETE FROM agent_versions WHERE tenant_id = ? AND agent_name = ? AND "
            "version_number = ?", (tenant_id, agent_name, number))
        return self.db.changes() > 0

    def delete_agent_versions(self, tenant_id: str, agent_name: str) -> None:
        """An agent deleted takes its versions with it (a new agent of that name starts
        at version 1)."""
        self.db.execute("DELETE FROM agent_versions WHERE tenant_id = ? AND agent_name = ?",
                        (tenant_id, agent_name))

    # limits: idle sandboxes

    def sessions_with_sandboxes(self) -> list[SessionRow]:
        """Active and paused sessions that have a sandbox recorded (the idle sweep's and the
        sandbox cap's candidates; not on the hot path)."""
        rows = self.db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE status IN ('active', 'paused') "
            f"AND sandbox_id IS NOT NULL")
        return [SessionRow(*row) for row in rows]

