"""Session lifecycle and turns: the one place that moves a session between states.

    starting -> active <-> paused -> ended      (error is resumable; ended is terminal)
                active -> stopped -> (resume)     (stopped: sandbox gone, state kept)

A turn runs as a task of its own, so it outlives the client that asked for it.
Each event gets the session's next sequence number, goes to the event log
(written behind, in batches) and is published, as one encoded SSE frame, to the
session's live subscribers. The log is flushed before `done` is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import VERSION
from gateway.agents import agent_spec
from gateway.conversation import user_message
from gateway.credentials import CredentialCipher, CredentialVault
from gateway.event_guard import history_document, replace_forged
from gateway.event_log import EventLog
from gateway.http import ApiError
from gateway.live import Feeds, Frame, Subscriber
from gateway.store import DEFAULT_TENANT, SessionRow, Store
from gateway.timestamps import iso_utc
from gateway.usage import TurnMeter
from runner import timing
from runner.backend import (
    AgentSpec,
    Backend,
    BackendError,
    CapacityExceeded,
    ExecResult,
    SandboxInfo,
)
from runner.timing import TIMING
from wire import events, sse
from wire import timing as wt
from wire.content import CONTENT_BLOCKS_OPTION
from wire.credentials import ModelCredential
from wire.events import done_payload
from wire.session_config import (
    SESSION_CONFIG_OPTION,
    SESSION_KEY,
    ConfigError,
    patch_config,
    public_config,
)

log = logging.getLogger("ash.sessions")

SEQ_RESERVATION = 1000
"""Event ids reserved per store write: one write per thousand events, none per event."""
DEFAULT_IDLE_TIMEOUT = 1800.0
"""Seconds a session's sandbox may sit untouched before the idle sweep pauses the session
and frees it (ASH_IDLE_TIMEOUT; 0: never)."""
MAX_EVICTIONS = 3
"""Idle sandboxes a create at the cap may free before it gives up (a freed slot can go to
a warm-pool spare first)."""

def session_json(row: SessionRow) -> dict[str, Any]:
    """The reference's Session (`id`, `tenantId`, `agentName`, `sandboxId`, `status`,
    `runnerId`, `parentSessionId`, ISO `createdAt`/`lastActiveAt`) and ours beside it."""
    updated = iso_utc(row.updated_at)
    config = session_config(row)
    return {
        "id": row.id,
        "tenantId": row.tenant_id,
        "agentName": row.agent,
        "agent": row.agent,
        "agentVersion": row.agent_version,
        "status": row.status,
        "runnerId": row.runner_id,
        "sandboxId": row.sandbox_id,
        "parentSessionId": row.parent_session_id,
        "lastEventId": row.last_event_seq,
        "turns": row.turns,
        "error": row.error,
        "createdAt": iso_utc(row.created_at),
        "lastActiveAt": updated,
        "updatedAt": updated,
        "model": config.get("model"),
        "config": public_config(config),
    }


def session_config(row: SessionRow) -> dict[str, Any]:
    """The session's own options (`wire.session_config`), as stored."""
    return orjson.loads(row.config)


def sandbox_agent(agent: AgentSpec, row: SessionRow) -> AgentSpec:
    """The agent as the session's sandbox runs it: the session's config rides the agent
    config to the runner (`SESSION_KEY`), which puts its `extraEnv` in the sandbox's
    environment and the rest in the bridge's."""
    config = {name: value for name, value in agent.config.items() if name != SESSION_KEY}
    if session := session_config(row):
        config[SESSION_KEY] = session
    return dataclasses.replace(agent, config=config)


def turn_options(row: SessionRow, options: dict[str, Any]) -> dict[str, Any]:
    """A turn's options with the session's config (but its env, which the sandbox already
    has) for the agent backend to apply."""
    config = session_config(row)
    config.pop("extraEnv", None)
    return {**options, SESSION_CONFIG_OPTION: config} if config else options


@dataclass
class SessionService:
    store: Store
    backend: Backend
    event_log: EventLog
    runner_id: str | None = None
    credential_cipher: CredentialCipher | None = None
    """ASH_CREDENTIAL_KEY's cipher; without it, no credential can be stored or used."""
    credentials: CredentialVault = field(init=False)
    """Where a session created with `credentialId` gets its credential at each sandbox start."""
    feeds: Feeds = field(default_factory=Feeds)
    _busy: set[str] = field(default_factory=set)
    _last_seq: dict[str, int] = field(default_factory=dict)
    _reserved: dict[str, int] = field(default_factory=dict)
    _turns: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _adopting: set[asyncio.Task[None]] = field(default_factory=set)
    resume_warm_hits: int = 0
    """Resumes that found the sandbox alive (what /health reports as `resumeWarmHits`)."""
    resume_cold_hits: int = 0
    """Resumes that started a new sandbox and restored the state into it."""
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    evictions: int = 0
    """Idle sandboxes freed to make room for another session at the sandbox cap."""
    _touched: dict[str, float] = field(default_factory=dict)
    """When each session was last used (a turn, a resume, an exec), wall-clock seconds."""

    def __post_init__(self) -> None:
        self.credentials = CredentialVault(self.store, self.credential_cipher)
        self.event_log.on_flushed = self.backend.acknowledge
        watch_stops = getattr(self.backend, "on_sandbox_stopped", None)
        if watch_stops is not None:
            watch_stops(self._sandbox_stopped)

    def _pause_if_gone(self, session_id: str, reason: str) -> None:
        """Pause an active, idle session whose sandbox is gone, saying why; a resume starts
        a new sandbox."""
        if self.backend.is_alive(session_id) or self.is_busy(session_id):
            return  # the common case after a turn: no store read
        row = self.store.get_session(session_id)
        if row is None or row.status != "active":
            return
        self.store.update_session(session_id, status="paused", sandbox_id=None, error=reason)
        if row.sandbox_id:
            self.store.end_sandbox(row.sandbox_id, "dead")

    def _sandbox_stopped(self, session_id: str, reason: str) -> None:
        """The backend stopped a session's sandbox between turns (its bridge broke the
        protocol): pause the session, saying why; a resume starts a new sandbox. (A turn
        that was running ends with its own `error`, and `_finish_turn` pauses it.)"""
        turn = self._turns.get(session_id)
        if turn is not None:  # look again once the turn is over (it may have paused it)
            turn.add_done_callback(lambda _: self._sandbox_stopped(session_id, reason))
            return
        self._pause_if_gone(session_id, reason)

    # lookups

    def get(self, session_id: str, tenant_id: str | None = None) -> SessionRow:
        """The session; given `tenant_id`, only if it is that tenant's: another tenant's
        session answers exactly as an unknown one (404), so its id tells nothing."""
        row = self.store.get_session(session_id, tenant_id)
        if row is None:
            raise ApiError(404, f"session not found: {session_id}")
        return row

    def get_live(self, session_id: str, tenant_id: str | None = None) -> SessionRow:
        row = self.get(session_id, tenant_id)
        if row.status == "ended":
            raise ApiError(410, f"session {session_id} has ended")
        return row

    def is_busy(self, session_id: str) -> bool:
        return session_id in self._busy

    @contextlib.contextmanager
    def held(self, session_id: str) -> Iterator[None]:
        """Keep turns, resumes and other holders off the session meanwhile (an edit of its
        stored state); 409 when one is already on it."""
        if self.is_busy(session_id):
            raise ApiError(409, "session is busy (a turn, a resume or another edit); retry "
                                "after it is done")
        self._busy.add(session_id)
        try:
            yield
        finally:
            self._busy.discard(session_id)

    def _next_seq(self, row: SessionRow) -> int:
        """The session's next event id, never one handed out before — even one a client
        saw whose batch a crash kept from the log: ids are reserved ahead, in blocks."""
        last = self._last_seq.get(row.id)
        if last is None:
            last = max(row.last_event_seq, row.seq_reserved)
        seq = last + 1
        if seq > self._reserved.get(row.id, row.seq_reserved):
            self._reserved[row.id] = seq + SEQ_RESERVATION
            self.store.reserve_seq(row.id, seq + SEQ_RESERVATION)
        self._last_seq[row.id] = seq
        return seq

    # lifecycle

    async def create(self, agent_name: str, config: dict[str, Any] | None = None,
                     tenant_id: str = DEFAULT_TENANT,
                     credential: tuple[str, str] | None = None
                     ) -> tuple[SessionRow, str | None]:
        """A new session of `tenant_id`'s agent with a ready sandbox, and a notice for the
        client, if any. `config` (checked by the caller: `wire.session_config.check_config`)
        is stored with it; without a `systemPrompt` of its own, the session is pinned to the
        agent's active version's prompt (`gateway.api.agent_versions`). `credential` (tenant
        id, credential id; checked by the caller) is the model credential its sandboxes get,
        at this start and every later one."""
        agent = self.store.get_agent(agent_name, tenant_id)
        if agent is None:
            raise ApiError(404, f"agent not found: {agent_name}")
        config = self._with_version_prompt(config or {}, tenant_id, agent.name)
        session_id = str(uuid.uuid4())
        self.store.insert_session(session_id, agent.name, agent.version, self.runner_id,
                                  orjson.dumps(config or {}).decode(), tenant_id)
        if credential is not None:
            self.store.link_session_credential(session_id, *credential)
        try:
            row, info = await self._start_sandbox(session_id, agent_name)
        except (BackendError, ApiError) as exc:
            self.store.delete_session(session_id)
            self.store.unlink_session_credential(session_id)
            if isinstance(exc, ApiError):
                raise
            if isinstance(exc, CapacityExceeded):
                raise ApiError(503, f"no sandbox for a new session: {exc}; no idle sandbox "
                                    "to free (each runs a turn or is in use)") from exc
            raise ApiError(503, f"sandbox failed to start: {exc}") from exc
        self.touch(session_id)
        notice = None
        if "backend" not in agent_spec(agent).config and info.agent_backend == "mock":
            notice = (f"agent {agent_name} names no backend and the runner has no model "
                      "credentials (ANTHROPIC_API_KEY): this session runs the mock agent")
            log.info("session %s: %s", session_id, notice)
        return row, notice

    def _with_version_prompt(self, config: dict[str, Any], tenant_id: str,
                             agent_name: str) -> dict[str, Any]:
        if "systemPrompt" in config:
            return config
        version = self.store.active_agent_version(tenant_id, agent_name)
        if version is None or not version.system_prompt:
            return config
        return {**config, "systemPrompt": version.system_prompt}

    async def _start_sandbox(
        self, session_id: str, agent_name: str
    ) -> tuple[SessionRow, SandboxInfo]:
        row = self.get(session_id)
        agent = self.store.get_agent(agent_name, row.tenant_id)
        if agent is None:
            raise ApiError(409, f"agent {agent_name} is no longer deployed")
        spec = dataclasses.replace(sandbox_agent(agent_spec(agent), row),
                                   credential=self._credential_of(session_id))
        info = await self._create_sandbox(session_id, spec)
        runner_id = info.runner_id or self.runner_id
        self.store.record_sandbox(info.sandbox_id, session_id, runner_id, info.pid)
        fresh = {} if info.attached else {"runner_hint": 0}
        row = self.store.update_session(
            session_id, status="active", sandbox_id=info.sandbox_id, runner_id=runner_id,
            error=None, **fresh,
        )
        assert row is not None
        return row, info

    def _credential_of(self, session_id: str) -> ModelCredential | None:
        """The session's own credential, decrypted for this sandbox start (ApiError when it
        is gone); None for a session that uses the runner's key."""
        link = self.store.session_credential(session_id)
        return None if link is None else self.credentials.open(*link)

    async def _create_sandbox(self, session_id: str, agent: AgentSpec) -> SandboxInfo:
        """The backend's create; at the sandbox cap, the least recently used idle sandbox
        is freed to make room (`make_room`), up to `MAX_EVICTIONS` times."""
        for _ in range(MAX_EVICTIONS):
            try:
                return await self.backend.create(session_id, agent)
            except CapacityExceeded:
                if not await self.make_room(session_id):
                    raise
        return await self.backend.create(session_id, agent)

    async def pause(self, session_id: str) -> SessionRow:
        row = self.get_live(session_id)
        self.touch(session_id)
        if row.status == "paused":
            return row
        if row.status != "active":
            raise ApiError(409, f"session is {row.status}; only an active session can pause")
        if self.is_busy(session_id):
            raise ApiError(409, "session is busy with a turn; interrupt it or wait for done")
        self._busy.add(session_id)
        try:
            await self.backend.checkpoint(session_id)
        finally:
            self._busy.discard(session_id)
        paused = self.store.update_session(session_id, status="paused")
        assert paused is not None
        return paused

    async def resume(self, session_id: str) -> SessionRow:
        """Warm when the sandbox is alive, cold (new sandbox, state restored) otherwise."""
        row = self.get_live(session_id)
        self.touch(session_id)
        if self.is_busy(session_id):
            raise ApiError(409, "session is busy with a turn")
        if row.status == "starting":
            raise ApiError(409, "session is still starting")
        if self.backend.is_alive(session_id):
            if row.status == "active":
                return row
            resumed = self.store.update_session(session_id, status="active", error=None)
            assert resumed is not None
            self.resume_warm_hits += 1
            return resumed
        started = await self._cold_start(row)
        self.resume_cold_hits += 1
        return started

    async def _cold_start(self, row: SessionRow) -> SessionRow:
        """Start the session's sandbox again, or attach to the one its runner kept — and
        then take over the turns that ran on there while no gateway was attached."""
        self._busy.add(row.id)
        try:
            if row.sandbox_id:
                self.store.end_sandbox(row.sandbox_id, "dead")
            started, info = await self._start_sandbox(row.id, row.agent)
        except CapacityExceeded as exc:
            self.store.update_session(row.id, sandbox_id=None)  # still resumable as it was
            raise ApiError(503, f"no sandbox to resume the session in: {exc}") from exc
        except BackendError as exc:
            self.store.update_session(row.id, status="error", sandbox_id=None, error=str(exc))
            raise ApiError(503, f"sandbox failed to start: {exc}") from exc
        finally:
            self._busy.discard(row.id)
        if info.pending_turns:
            self._take_over_turns(started)
        return started

    def _take_over_turns(self, row: SessionRow) -> None:
        """Log and publish the rest of the turns the runner ran without a gateway.

        Their events are numbered on from the last one in the log, so an event the
        previous gateway numbered but had not logged yet gets the very id it had:
        a client that saw it and rejoins with that id sees nothing twice."""
        self.event_log.flush()
        current = self.get(row.id)
        self._last_seq[row.id] = current.last_event_seq
        log.info("session %s: taking over the turn that ran on its runner without a gateway",
                 row.id)
        self._busy.add(row.id)
        self._run(row, self.backend.replay(row.id))

    def adopt_unfinished_turn(self, session_id: str) -> None:
        """A runner reports a turn of this session our log lacks the end of: attach to
        its sandbox and take the turn over (in the background)."""
        task = asyncio.get_running_loop().create_task(self._adopt(session_id))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _adopt(self, session_id: str) -> None:
        row = self.store.get_session(session_id)
        if (row is None or row.status != "active" or self.is_busy(session_id)
                or self.backend.is_alive(session_id)):
            return
        try:
            await self._cold_start(row)
        except ApiError as exc:
            log.warning("session %s: could not take over its running turn: %r",
                        session_id, exc.message)

    async def end(self, session_id: str) -> SessionRow:
        row = self.get_live(session_id)
        await self.backend.destroy(session_id)
        if row.sandbox_id:
            self.store.end_sandbox(row.sandbox_id)
        ended = self.store.update_session(session_id, status="ended", sandbox_id=None)
        assert ended is not None
        self._touched.pop(session_id, None)
        self.feeds.close_session(session_id)
        return ended

    async def stop(self, session_id: str) -> SessionRow:
        """Destroy the session's sandbox and keep its state: status `stopped`, resumable (cold).

        The state is made durable first (`checkpoint`: a remote runner ships it to the
        gateway's store); the workspace is kept where the backend holds it.
        """
        row = self.get_live(session_id)
        if row.status == "stopped":
            return row
        if row.status == "starting":
            raise ApiError(409, "session is still starting")
        if self.is_busy(session_id):
            raise ApiError(409, "session is busy with a turn; interrupt it or wait for done")
        try:
            await self._release_sandbox(session_id)
        except StateNotSaved as exc:
            raise ApiError(503, f"session state not saved, sandbox kept: {exc}") from exc
        if row.sandbox_id:
            self.store.end_sandbox(row.sandbox_id)
        stopped = self.store.update_session(session_id, status="stopped", sandbox_id=None)
        assert stopped is not None
        return stopped

    async def _release_sandbox(self, session_id: str) -> None:
        """Make the session's state durable (`checkpoint`: a remote runner ships it to the
        gateway's store), then destroy its sandbox, the workspace kept where the backend
        holds it. StateNotSaved (sandbox kept) when the checkpoint fails."""
        self._busy.add(session_id)
        try:
            if self.backend.is_alive(session_id):
                try:
                    await self.backend.checkpoint(session_id)
                except BackendError as exc:
                    raise StateNotSaved(str(exc)) from exc
            await self.backend.destroy(session_id, keep_workspace=True)
        finally:
            self._busy.discard(session_id)

    # reclaiming idle sandboxes

    def touch(self, session_id: str) -> None:
        self._touched[session_id] = time.time()

    def _last_used(self, row: SessionRow) -> float:
        """Since this process started, its own record; before, the row's last change."""
        return self._touched.get(row.id, row.updated_at)

    def idle_holders(self) -> list[SessionRow]:
        """Active or paused sessions whose sandbox lives and that nothing is using (no
        turn, resume or edit), least recently used first."""
        rows = [row for row in self.store.sessions_with_sandboxes()
                if not self.is_busy(row.id) and row.id not in self._turns
                and self.backend.is_alive(row.id)]
        rows.sort(key=self._last_used)
        return rows

    async def _free_idle(self, row: SessionRow, status: str) -> bool:
        """Free an idle session's sandbox, its state kept, leaving it `status`; False when
        it is no longer idle or its state could not be saved (the sandbox is then kept)."""
        current = self.store.get_session(row.id)
        if (current is None or current.status not in ("active", "paused")
                or self.is_busy(row.id) or row.id in self._turns
                or not self.backend.is_alive(row.id)):
            return False
        try:
            await self._release_sandbox(row.id)
        except StateNotSaved as exc:
            log.warning("session %s: idle sandbox kept, its state was not saved: %s",
                        row.id, exc)
            return False
        if current.sandbox_id:
            self.store.end_sandbox(current.sandbox_id)
        self.store.update_session(row.id, status=status, sandbox_id=None)
        return True

    async def make_room(self, for_session: str) -> bool:
        """At the sandbox cap: free the least recently used idle sandbox. Its session keeps
        its status and state: an active one starts a sandbox again (cold) at its next
        message or exec, a paused one at its resume. False when no sandbox is idle."""
        for row in self.idle_holders():
            if row.id != for_session and await self._free_idle(row, row.status):
                self.evictions += 1
                log.info("session %s: idle sandbox freed for session %s (sandbox cap)",
                         row.id, for_session)
                return True
        return False

    async def pause_idle(self) -> int:
        """Pause every session untouched for `idle_timeout` seconds and free its sandbox
        (state kept; a resume starts it cold). Returns how many were paused."""
        cutoff = time.time() - self.idle_timeout
        paused = 0
        for row in self.idle_holders():
            if self._last_used(row) > cutoff:
                break
            if await self._free_idle(row, "paused"):
                paused += 1
                log.info("session %s: paused after %g s idle, its sandbox freed", row.id,
                         self.idle_timeout)
        return paused

    async def fork(self, session_id: str) -> SessionRow:
        """A new, paused session with the parent's conversation and workspace.

        The parent's state (a snapshot of its workspace, the agent's conversation files
        included) is seeded as the fork's, and the parent's event log copied; from then on
        the two are independent. Resume the fork to talk to it.
        """
        parent = self.get_live(session_id)
        if parent.status == "starting":
            raise ApiError(409, "session is still starting")
        if self.is_busy(session_id):
            raise ApiError(409, "session is busy with a turn; fork it once its done is out")
        agent = self.store.get_agent(parent.agent, parent.tenant_id)
        if agent is None:
            raise ApiError(409, f"agent {parent.agent} is no longer deployed")
        self._busy.add(session_id)
        try:
            state = await self.backend.saved_state(session_id)
        except BackendError as exc:
            raise ApiError(409, f"session {session_id} has no state to fork: {exc}") from exc
        finally:
            self._busy.discard(session_id)
        fork_id = str(uuid.uuid4())
        self.event_log.flush()
        fork = self.store.insert_fork(fork_id, parent)
        if (link := self.store.session_credential(session_id)) is not None:
            self.store.link_session_credential(fork_id, *link)
        try:
            await self.backend.seed(fork_id, agent_spec(agent), state)
        except BaseException as exc:
            with contextlib.suppress(BackendError):
                await self.backend.destroy(fork_id)  # what a half-done seed left
            self.store.delete_session(fork_id)
            self.store.unlink_session_credential(fork_id)
            if isinstance(exc, BackendError):
                raise ApiError(503, f"fork of session {session_id} failed: {exc}") from exc
            raise
        return fork

    def update_config(self, session_id: str, patch: Any) -> SessionRow:
        """Merge `patch` into the session's config; the next turn runs with it."""
        row = self.get_live(session_id)
        try:
            config = patch_config(session_config(row), patch)
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        updated = self.store.update_session(session_id, config=orjson.dumps(config).decode())
        assert updated is not None
        return updated

    async def interrupt(self, session_id: str) -> SessionRow:
        row = self.get_live(session_id)
        if self.is_busy(session_id):
            await self.backend.interrupt(session_id)
        return row

    async def exec(self, session_id: str, command: str, time_limit: float) -> ExecResult:
        """Run a shell command in the session's sandbox, beside any turn in progress."""
        row = self.get_live(session_id)
        self.touch(session_id)
        if not self.backend.is_alive(session_id):
            if row.status != "active":
                raise ApiError(409, f"session is {row.status} and its sandbox is not running; "
                                    "resume it first")
            await self._cold_start(row)
        return await self.backend.exec(session_id, command, time_limit)

    # turns

    async def begin_turn(self, session_id: str, tenant_id: str | None = None) -> SessionRow:
        """Pre-stream checks (given `tenant_id`, the session must be that tenant's: 404
        otherwise); on success the session is marked busy until `run_turn` ends."""
        row = self.get_live(session_id, tenant_id)
        self.touch(session_id)
        if self.is_busy(session_id):
            raise ApiError(409, "session is busy with another turn")
        if row.status != "active":
            raise ApiError(409, f"session is {row.status}; resume it before sending messages")
        if not self.backend.is_alive(session_id):
            row = await self._cold_start(row)
            if self.is_busy(session_id):
                raise ApiError(409, "session is busy with a turn that ran on while the "
                                    "gateway restarted; wait for its done")
        self._busy.add(session_id)
        return row

    def abandon_turn(self, session_id: str) -> None:
        """Release a turn that `begin_turn` admitted but that never started."""
        self._busy.discard(session_id)

    def start_turn(self, row: SessionRow, prompt: str, options: dict[str, Any],
                   turn_id: str = "") -> None:
        """Run the turn `begin_turn` admitted as a task of its own: it outlives any client.

        Its events reach whoever subscribed to the session's feed (subscribe first,
        then start, to see every event). `turn_id` joins the turn's timing points.
        """
        self._run(row, self._turn_events(row.id, prompt, turn_options(row, options), turn_id),
                  user_message(prompt, options.get(CONTENT_BLOCKS_OPTION)))

    def _run(self, row: SessionRow, source: AsyncIterator[events.Event],
             prompt: bytes | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._produce(row, source, prompt))
        self._turns[row.id] = task
        task.add_done_callback(lambda _: self._turns.pop(row.id, None))

    async def _produce(self, row: SessionRow, source: AsyncIterator[events.Event],
                       prompt: bytes | None = None) -> None:
        """Sequence, log and publish each event; the log is durable before `done` goes out.

        `prompt`, the turn's user message, is recorded under the id of its `session_start`,
        and the turn's usage (`gateway.usage`) in the batch that logs its `done`.

        Publishing waits while a subscriber is full, so a slow reader slows the agent.
        An event from a runner carries its hint; one the gateway made up amid them
        (runner lost, state not saved, the turn's `session_start`), and the first after
        a jump in numbering, are
        logged at once, so that after a crash the ids of the runner's events still
        follow on from the log (see `_take_over_turns`).
        """
        session_id = row.id
        finished = False
        from_runner = False
        first = True
        meter = TurnMeter()
        try:
            async for event in source:
                renumbered = session_id not in self._last_seq
                seq = self._next_seq(row)
                try:
                    encoded = sse.encode_event(seq, event.type, event.data)
                except ValueError:
                    event = replace_forged(session_id, seq, event)
                    encoded = sse.encode_event(seq, event.type, event.data)
                meter.observe(event)
                self.event_log.append(session_id, seq, event.type, event.data, event.hint)
                if event.type == events.DONE:
                    self.event_log.record_usage(meter.rows(row))
                    meter = TurnMeter()
                    self.event_log.flush()
                    self._finish_turn(row)
                elif event.type == events.SESSION_START:
                    # Logged at once: a runner's events after it, numbered on from the
                    # log after a gateway crash, keep the ids a client saw.
                    if prompt is not None:
                        self.event_log.record_prompt(session_id, seq, prompt)
                        prompt = None
                    self.event_log.flush()
                elif event.hint is not None:
                    from_runner = True
                elif from_runner or (renumbered and seq != row.last_event_seq + 1):
                    self.event_log.flush()
                await self.feeds.publish(session_id, Frame(seq, event.type, encoded))
                if first:
                    # Let the readers write the turn's first event before the rest of a
                    # burst is sequenced: it carries the time to first token.
                    first = False
                    await asyncio.sleep(0)
                finished = event.type == events.DONE
        except Exception:
            log.exception("turn of session %s failed", session_id)
        finally:
            self._busy.discard(session_id)
            self.touch(session_id)
            self.event_log.flush()
            if finished:
                # A remote sandbox's stream can end just behind its turn's `done` (the
                # sandbox exited), and its status can be lost to an Ack in flight: once
                # the turn's source is over, the backend knows whether the sandbox lives.
                self._pause_if_gone(session_id, "sandbox exited during the turn")
            else:
                # Readers waiting for this turn's `done` would wait forever: end their
                # streams; what was logged can be read again with Last-Event-ID.
                self.feeds.close_session(session_id)

    def subscribe_from(self, session_id: str, after: int) -> tuple[Subscriber, int]:
        """Subscribe to a session's live events; returns the subscriber and the last id
        already in the log. Events after `after` up to that id are read from the store,
        later ones arrive on the subscriber — no gap, no duplicate at the seam."""
        row = self.get(session_id)
        subscriber = self.feeds.subscribe(session_id)
        self.event_log.flush()
        return subscriber, self._last_seq.get(session_id, row.last_event_seq)

    async def turn_finished(self, session_id: str) -> None:
        """Wait until the session's running turn, if any, is over (its `done` logged, the
        session no longer busy); cancelling the wait leaves the turn running."""
        task = self._turns.get(session_id)
        if task is not None:
            await asyncio.wait([task])

    async def wait_for_turns(self) -> None:
        """Let running turns finish (used at shutdown, bounded by the caller)."""
        if self._turns:
            await asyncio.wait(list(self._turns.values()))

    async def _turn_events(
        self, session_id: str, prompt: str, options: dict[str, Any], turn_id: str = ""
    ) -> AsyncIterator[events.Event]:
        first_pending = TIMING and bool(turn_id)
        if first_pending:
            timing.point(wt.GATEWAY_BACKEND_SEND, turn_id, session_id)

        def note_first_token(event: events.Event) -> events.Event:
            nonlocal first_pending
            if first_pending and event.type in wt.TOKEN_EVENTS:
                first_pending = False
                timing.point(wt.GATEWAY_FIRST_EVENT, turn_id, session_id)
            return event

        stream = self.backend.send(session_id, prompt, options, turn_id=turn_id)
        # The prompt goes out before the turn's `session_start` is logged and written:
        # the agent starts working while the gateway does that.
        first = asyncio.ensure_future(anext(stream, None))
        await asyncio.sleep(0)
        try:
            yield events.Event(events.SESSION_START, orjson.dumps(
                {"sessionId": session_id, "version": VERSION}))
            head = await first
            if head is None:
                return
            yield note_first_token(head)
            async for event in stream:
                yield note_first_token(event) if first_pending else event
        except BackendError as exc:
            yield events.Event(
                events.ERROR, orjson.dumps({"error": str(exc), "code": "backend_error"})
            )
            yield events.Event(events.DONE, done_payload(session_id, "error"))
        finally:
            if not first.done():
                first.cancel()
                with contextlib.suppress(BaseException):
                    await first
            await stream.aclose()

    def _finish_turn(self, row: SessionRow) -> None:
        current = self.get(row.id)
        if self.backend.is_alive(row.id):
            self.store.update_session(row.id, turns=current.turns + 1)
            return
        self.store.update_session(
            row.id,
            turns=current.turns + 1,
            status="paused" if current.status == "active" else current.status,
            sandbox_id=None,
            error="sandbox exited during the turn",
        )
        if current.sandbox_id:
            self.store.end_sandbox(current.sandbox_id, "dead")

    def events_after(self, session_id: str, after: int, limit: int) -> bytes:
        """The persisted history as a JSON document (`gateway.event_guard.history_document`)."""
        self.get(session_id)
        self.event_log.flush()
        return history_document(self.store.events_after(session_id, after, limit))

    def recover_after_restart(self) -> int:
        """In-process sandboxes died with the last gateway process: pause their sessions."""
        return self.store.pause_orphaned_local_sessions()


class StateNotSaved(BackendError):
    """A sandbox was kept because the session's state could not be made durable."""
