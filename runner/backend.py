"""The backend interface: what the gateway asks of the place where sandboxes live.

Standalone mode implements it in-process (`runner.local.LocalBackend`); the
coordinator mode implements it over gRPC to a remote `ash-runner`. The gateway
codes against this interface only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from runner.bridge_log import LogPage
from wire.credentials import ModelCredential
from wire.events import Event


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """A deployed agent as a sandbox needs it: its folder and parsed config."""

    name: str
    path: str
    version: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    credential: ModelCredential | None = field(default=None, repr=False, compare=False)
    """The session's own model credential (`credentialId`), in memory only: an anthropic
    one goes upstream through the model proxy, others into the sandbox's environment."""


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    sandbox_id: str
    session_id: str
    pid: int
    workspace: str
    restored: bool
    """True when the workspace came from earlier state (cold resume), not fresh."""
    runner_id: str | None = None
    """The runner holding the sandbox (coordinator mode); None when it is in-process."""
    agent_backend: str = ""
    """The agent backend the bridge runs (`mock`, `claude`), from its `ready`."""
    attached: bool = False
    """The sandbox was already running (a remote runner kept it across a gateway restart)."""
    pending_turns: int = 0
    """Turns that ran on while no gateway was attached: `replay` yields their events."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A warm pool's sandboxes (`runner.warm_pool`); none of them holds a session."""

    size: int
    """How many it keeps warm."""
    ready: int
    starting: int
    served: int
    """Creates it has served since the backend started."""


@dataclass(frozen=True, slots=True)
class BackendStats:
    sandboxes: int
    """Sandboxes holding a session (warm-pool sandboxes are not counted)."""
    busy: int
    pool: PoolStats | None = None
    capacity: int = 0
    """Most sandboxes that may be live at once (warm ones included); 0 when none can start."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    """A shell command's outcome in a sandbox; each stream is capped at `EXEC_OUTPUT_CAP`."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    timed_out: bool


EXEC_OUTPUT_CAP = 256 * 1024
EXEC_MAX_TIMEOUT = 300.0
"""Longest a command may run, in seconds (the API takes `timeout` in ms, up to 300000)."""
DEFAULT_MAX_SANDBOXES = 100
"""Most live sandboxes one backend holds, warm-pool sandboxes included, unless configured."""
MAX_SANDBOXES_ENV = "ASH_MAX_SANDBOXES"


class BackendError(Exception):
    """A backend operation failed for a reason the client should see."""


class SandboxStartError(BackendError):
    """The bridge did not come up; the message names its exit code and stderr."""


class SandboxGone(BackendError):
    """The session has no live sandbox on this backend."""


class CapacityExceeded(BackendError):
    """The backend holds its most live sandboxes (warm ones included): nothing started."""


class Backend(Protocol):
    async def create(
        self, session_id: str, agent: AgentSpec, *, state: bytes | None = None
    ) -> SandboxInfo:
        """Start a sandbox for `session_id` and wait for its bridge's `ready`.

        With `state`, the workspace is restored from that snapshot. Without it, a
        workspace this backend still holds for the session is kept (cold resume on
        the same machine); otherwise a fresh one is made.
        """
        ...

    def is_alive(self, session_id: str) -> bool: ...

    def send(
        self, session_id: str, prompt: str, options: dict[str, Any] | None = None,
        *, turn_id: str = "",
    ) -> AsyncIterator[Event]:
        """Run one turn; yields its events, the last one `done`.

        If the sandbox dies mid-turn the iterator yields an `error` event naming
        the cause, then `done`. `turn_id` (set when ASH_DEBUG_TIMING is on) goes down
        to the bridge to join the turn's timing points.
        """
        ...

    def replay(self, session_id: str) -> AsyncIterator[Event]:
        """The rest of the `pending_turns` a `create` that attached reported: every event
        after the last one acknowledged, up to the last of those turns' `done`."""
        ...

    def acknowledge(self, hints: dict[str, int]) -> None:
        """The event log durably holds each session's events up to this `Event.hint`.

        A remote runner then forgets them; in-process sandboxes keep nothing to forget.
        """
        ...

    async def interrupt(self, session_id: str) -> None: ...

    async def exec(self, session_id: str, command: str, time_limit: float) -> ExecResult:
        """Run `command` with /bin/sh in the session's sandbox (beside any running turn).

        The time limit kills the command's process group, never the sandbox.
        """
        ...

    async def destroy(self, session_id: str, *, keep_workspace: bool = False) -> None:
        """Stop the sandbox. The workspace is deleted unless `keep_workspace`."""
        ...

    async def snapshot(self, session_id: str) -> bytes:
        """The session's state (its workspace, conversation files included) as a tar."""
        ...

    async def checkpoint(self, session_id: str) -> None:
        """Make the session's current state durable where a cold resume will look for it.

        In-process sandboxes keep their workspace on the gateway's disk: nothing to do.
        A remote backend ships the state to the gateway's store.
        """
        ...

    async def saved_state(self, session_id: str) -> bytes:
        """The session's latest state, live sandbox or not (to fork it): a snapshot of its
        live sandbox, else the state a cold resume would restore. SandboxGone if it has none."""
        ...

    async def seed(self, session_id: str, agent: AgentSpec, state: bytes) -> None:
        """Make `state` the state of a session that has no sandbox yet (a fork): its first
        `create` restores it."""
        ...

    async def logs(self, session_id: str, after: int, limit: int) -> LogPage:
        """The lines of the session's bridge log after index `after` (`runner.bridge_log`),
        read from whatever its runner still keeps on disk: none once the sandbox's
        directory is gone (the session ended)."""
        ...

    def stats(self) -> BackendStats: ...

    async def close(self) -> None:
        """Stop every sandbox (workspaces are kept for a later cold resume)."""
        ...
