"""Event and command type names shared by bridge, runner and gateway.

Event payloads are JSON bytes produced once, in the bridge; every later hop
carries them as opaque bytes next to their type name.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bridge lifecycle events (bridge -> runner); `ready` never reaches a client.
READY = "ready"
# The answer to an `exec` command, matched to it by its `id`; not a turn event.
EXEC_RESULT = "exec_result"

# Turn events (bridge -> runner -> gateway -> client, one SSE frame each).
MESSAGE = "message"
TEXT_DELTA = "text_delta"
THINKING_DELTA = "thinking_delta"
TOOL_USE = "tool_use"
TOOL_RESULT = "tool_result"
TURN_COMPLETE = "turn_complete"
ERROR = "error"
DONE = "done"

TURN_EVENT_TYPES: frozenset[str] = frozenset(
    {MESSAGE, TEXT_DELTA, THINKING_DELTA, TOOL_USE, TOOL_RESULT, TURN_COMPLETE, ERROR, DONE}
)
BRIDGE_EVENT_TYPES: frozenset[str] = TURN_EVENT_TYPES | {READY, EXEC_RESULT}

# Commands (runner -> bridge).
QUERY = "query"
INTERRUPT = "interrupt"
SHUTDOWN = "shutdown"
EXEC = "exec"
"""Run a shell command in the sandbox, beside any turn: `{"id", "command", "timeout_ms"}`."""

BRIDGE_COMMAND_TYPES: frozenset[str] = frozenset({QUERY, INTERRUPT, SHUTDOWN, EXEC})


@dataclass(frozen=True, slots=True)
class Event:
    """One agent event: its type name and its JSON payload, never re-encoded."""

    type: str
    data: bytes
