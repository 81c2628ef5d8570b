"""The prompt queue: items stored durably, claimed atomically by worker tasks in the
gateway process, run as turns of a session, retried with exponential backoff.

An attempt records, before its turn starts, the session's last logged event id
(`turn_after`): the turn's `session_start` is the first event after it. Whether that turn
finished is then read from the session's own log (its `done`, durable before it is
published), never guessed: a gateway that died after the turn's `done` but before
marking the item completes it on restart instead of running the prompt again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.http import ApiError
from gateway.sessions import SessionService
from gateway.store import QueueRow, Store
from gateway.timestamps import iso_utc
from runner.backend import BackendError
from wire import events

log = logging.getLogger("ash.queue")

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
RESUMABLE = ("paused", "stopped", "error")
PERMANENT_STATUSES = (400, 404, 410)
"""An attempt refused with one of these (the session or agent is gone, ended, or does not
fit) fails the item at once: a retry would get the same answer."""
INTERRUPTED = "the turn was interrupted"
GATEWAY_STOPPED = "the gateway stopped while the item was processing"


@dataclass(frozen=True, slots=True)
class QueueSettings:
    concurrency: int = 2
    """Items processed at once (each is one turn, in its own session's sandbox)."""
    retry_base: float = 5.0
    """Seconds before the first retry; each later one waits twice as long."""
    retry_cap: float = 300.0
    """The longest wait before a retry, in seconds."""
    max_pending: int = 1000
    """Pending items a tenant may have at once; beyond, an enqueue is a 429."""
    poll_interval: float = 1.0
    """The longest a worker sleeps before looking for due items again."""

    def backoff(self, retries_done: int) -> float:
        """The wait before retry number `retries_done + 1`: base·2^n, capped."""
        return min(self.retry_cap, self.retry_base * 2 ** min(retries_done, 62))


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    finished: bool
    """The turn's `done` is in the log."""
    status: str = ""
    """The `done` status: ok, error or interrupted."""
    error: str | None = None
    """The turn's last `error` event's message, if any."""


def turn_outcome(store: Store, session_id: str, after: int) -> TurnOutcome:
    """How the first turn logged after event `after` ended, read from the session's log:
    finished only if its `done` comes before any other turn's `session_start`."""
    started = False
    error: str | None = None
    wanted = (events.SESSION_START, events.ERROR, events.DONE)
    for row in store.history_after(session_id, after, wanted):
        if row.type == events.SESSION_START:
            if started:
                break  # a later turn began: ours never logged its done
            started = True
        elif not started:
            continue
        elif row.type == events.ERROR:
            error = _payload_text(row.data, "error")
        else:
            return TurnOutcome(True, _payload_text(row.data, "status") or "ok", error)
    return TurnOutcome(False)


def _payload_text(data: bytes, key: str) -> str | None:
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(data)
        if isinstance(value, dict) and isinstance(value.get(key), str):
            return value[key]
    return None


def item_json(row: QueueRow) -> dict[str, Any]:
    """The reference's QueueItem, and `nextAttemptAt` (when a pending item is due, or the
    last attempt was) beside it."""
    return {
        "id": row.id,
        "tenantId": row.tenant_id,
        "sessionId": row.session_id,
        "agentName": row.agent_name,
        "prompt": row.prompt,
        "status": row.status,
        "priority": row.priority,
        "retryCount": row.retry_count,
        "maxRetries": row.max_retries,
        "error": row.error,
        "createdAt": iso_utc(row.created_at),
        "startedAt": None if row.started_at is None else iso_utc(row.started_at),
        "completedAt": None if row.completed_at is None else iso_utc(row.completed_at),
        "nextAttemptAt": iso_utc(row.next_attempt_at),
    }


class AttemptFailed(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass
class QueueService:
    store: Store
    sessions: SessionService
    settings: QueueSettings = field(default_factory=QueueSettings)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)
    _wake: asyncio.Event | None = None

    # the routes' side

    def enqueue(self, tenant_id: str, agent_name: str, prompt: str, session_id: str | None,
                priority: int, max_retries: int) -> QueueRow:
        pending = self.store.count_queue_items_by_status(tenant_id).get("pending", 0)
        if pending >= self.settings.max_pending:
            raise ApiError(429, f"the queue is full: {pending} items are pending "
                                f"(at most {self.settings.max_pending})")
        row = self.store.insert_queue_item(str(uuid.uuid4()), tenant_id, agent_name, prompt,
                                           session_id, priority, max_retries)
        if self._wake is not None:
            self._wake.set()
        return row

    # lifecycle

    def start(self) -> None:
        """Settle what a previous gateway left processing, then start the workers."""
        settled = self.recover()
        if settled:
            log.info("queue: settled %d item(s) left processing by the last run", settled)
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(self.settings.concurrency)]

    async def close(self) -> None:
        """Stop the workers; an item they held stays processing and the next start settles
        it from the session's log."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []

    def recover(self) -> int:
        """Every item left processing: completed if its turn's `done` is logged (ok), else
        a failed attempt (retried after the backoff while retries remain)."""
        rows = self.store.processing_queue_items()
        for row in rows:
            outcome = self._logged_outcome(row)
            if outcome is not None and outcome.finished:
                self._settle(row, outcome)
            else:
                self._fail(row, GATEWAY_STOPPED)
        return len(rows)

    # the workers

    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            row = self.store.claim_queue_item(time.time())
            if row is None:
                await self._idle()
                continue
            try:
                await self._process(row)
            except Exception:
                log.exception("queue item %s: processing failed", row.id)
                self._fail(row, "internal error while processing the item")

    async def _idle(self) -> None:
        assert self._wake is not None
        timeout = self.settings.poll_interval
        due = self.store.next_queue_attempt_at()
        if due is not None:
            timeout = max(0.0, min(timeout, due - time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _process(self, row: QueueRow) -> None:
        # An earlier attempt's turn may have finished after all (split mode: its runner
        # ran it on while no gateway was attached): then it is not run again.
        outcome = self._logged_outcome(row)
        failure: AttemptFailed | None = None
        if not (outcome and outcome.finished and outcome.status == "ok"):
            try:
                row, outcome = await self._attempt(row)
            except AttemptFailed as exc:
                failure = exc
        current = self.store.get_queue_item(row.tenant_id, row.id) or row
        if current.created_session and current.session_id:
            await self._release_session(current.session_id)
        if failure is not None:
            self._fail(current, failure.message, permanent=failure.permanent)
        elif outcome is not None:
            self._settle(current, outcome)

    async def _attempt(self, row: QueueRow) -> tuple[QueueRow, TurnOutcome]:
        try:
            row = await self._session_of(row)
            assert row.session_id is not None
            session = await self.sessions.begin_turn(row.session_id)
        except ApiError as exc:
            raise AttemptFailed(exc.message,
                                permanent=exc.status in PERMANENT_STATUSES) from None
        except BackendError as exc:
            raise AttemptFailed(f"sandbox backend: {exc}") from None
        try:
            self.sessions.event_log.flush()
            marked = self.store.update_queue_item(
                row.id, turn_after=self.store.last_event_seq(session.id))
            assert marked is not None
            row = marked
            self.sessions.start_turn(session, row.prompt, {})
        except BaseException:
            self.sessions.abandon_turn(session.id)
            raise
        await self.sessions.turn_finished(session.id)
        outcome = self._logged_outcome(row)
        assert outcome is not None
        if not outcome.finished:
            raise AttemptFailed("the turn ended without its done (its sandbox went away)")
        return row, outcome

    async def _session_of(self, row: QueueRow) -> QueueRow:
        """The item's session, created if the item names none, and resumed if need be."""
        if row.session_id is None:
            session, _ = await self.sessions.create(row.agent_name, tenant_id=row.tenant_id)
            updated = self.store.update_queue_item(row.id, session_id=session.id,
                                                   created_session=1)
            assert updated is not None
            return updated
        session = self.sessions.get_live(row.session_id, row.tenant_id)
        if session.status in RESUMABLE:
            await self.sessions.resume(session.id)
        return row

    async def _release_session(self, session_id: str) -> None:
        """Stop a session the queue created: its sandbox is freed, its state and log kept
        (a resume continues the conversation)."""
        try:
            await self.sessions.stop(session_id)
        except (ApiError, BackendError) as exc:
            log.warning("queue: could not stop session %s after its item: %r", session_id,
                        str(exc))

    # settling an attempt

    def _logged_outcome(self, row: QueueRow) -> TurnOutcome | None:
        if row.session_id is None or row.turn_after is None:
            return None
        self.sessions.event_log.flush()
        return turn_outcome(self.store, row.session_id, row.turn_after)

    def _settle(self, row: QueueRow, outcome: TurnOutcome) -> None:
        """A finished turn: ok completes the item; an interrupt (a client's choice) fails it
        for good; an error is a failed attempt."""
        if outcome.status == "ok":
            self.store.update_queue_item(row.id, status="completed", error=None,
                                         completed_at=time.time())
        elif outcome.status == "interrupted":
            self._fail(row, INTERRUPTED, permanent=True)
        else:
            self._fail(row, outcome.error or f"the turn ended with status {outcome.status}")

    def _fail(self, row: QueueRow, error: str, *, permanent: bool = False) -> None:
        now = time.time()
        if permanent or row.retry_count >= row.max_retries:
            self.store.update_queue_item(row.id, status="failed", error=error,
                                         completed_at=now)
            log.info("queue item %s failed: %r", row.id, error)
            return
        self.store.update_queue_item(
            row.id, status="pending", error=error, retry_count=row.retry_count + 1,
            next_attempt_at=now + self.settings.backoff(row.retry_count))
