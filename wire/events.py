"""Event and command type names shared by bridge, runner and gateway.

Event payloads are JSON bytes produced once, in the bridge; every later hop
carries them as opaque bytes next to their type name.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

# Bridge lifecycle events (bridge -> runner); `ready` never reaches a client.
READY = "ready"
# The answer to an `exec` command, matched to it by its `id`; not a turn event.
EXEC_RESULT = "exec_result"
# A warm-pool bridge has started and waits for `bind` (`runner.warm_pool`); then `ready`.
WARM = "warm"
WARM_SLOT_ENV = "ASH_WARM_SLOT"
"""Names a warm-pool bridge's slot in its environment; a bridge that has it waits for `bind`."""

# Turn events (bridge -> runner -> gateway -> client, one SSE frame each).
MESSAGE = "message"
TEXT_DELTA = "text_delta"
THINKING_DELTA = "thinking_delta"
TOOL_USE = "tool_use"
TOOL_RESULT = "tool_result"
TURN_COMPLETE = "turn_complete"
ERROR = "error"
DONE = "done"
FORWARDED_DELTA_TYPES: frozenset[str] = frozenset(
    {"input_json_delta", "signature_delta", "citations_delta"})
"""Stream deltas other than text and thinking, sent as an event named after the delta (as
the reference does) carrying the raw delta; any other delta type gives no event of its own."""

TURN_EVENT_TYPES: frozenset[str] = frozenset(
    {MESSAGE, TEXT_DELTA, THINKING_DELTA, TOOL_USE, TOOL_RESULT, TURN_COMPLETE, ERROR, DONE}
) | FORWARDED_DELTA_TYPES

# Made by the gateway, never by a bridge (so not in BRIDGE_EVENT_TYPES).
SESSION_START = "session_start"
"""The first frame of every turn's stream: `{"sessionId", "version"}` (the gateway's version)."""

# Message options the bridge reads.
INCLUDE_PARTIAL_MESSAGES = "includePartialMessages"
"""False: no `text_delta`/`thinking_delta` (the text comes in `message` frames only), as the
reference without the option. Absent or true: deltas are streamed (our default)."""
# The model proxy (`runner.model_proxy`), beside any turn, matched by `id`. bridge -> runner:
# `model_request` {"id", "method", "path", "headers", "body" (base64)} and `model_cancel`
# {"id"} when the CLI hangs up. runner -> bridge: `model_response_head` {"id", "status",
# "headers"}, then `model_response_chunk` {"id", "data" (base64)} as the upstream sends
# them, then `model_response_end` {"id", "error"?} (an error cuts the CLI's connection).
MODEL_REQUEST = "model_request"
MODEL_CANCEL = "model_cancel"
MODEL_RESPONSE_HEAD = "model_response_head"
MODEL_RESPONSE_CHUNK = "model_response_chunk"
MODEL_RESPONSE_END = "model_response_end"

BRIDGE_EVENT_TYPES: frozenset[str] = TURN_EVENT_TYPES | {
    READY, EXEC_RESULT, MODEL_REQUEST, MODEL_CANCEL}

SANDBOX_EXITED = "sandbox exited"
"""How a runner's Session stream ends (gRPC ABORTED details) when the session's sandbox
exits, followed by `: <why>` when the runner stopped it (a bridge protocol violation)."""

# Commands (runner -> bridge).
QUERY = "query"
INTERRUPT = "interrupt"
SHUTDOWN = "shutdown"
EXEC = "exec"
"""Run a shell command in the sandbox, beside any turn: `{"id", "command", "timeout_ms"}`."""
BIND = "bind"
"""Give a warm-pool bridge its session: `{"env": {name: value}}`, the variables a bridge
started for that session would have had (agent, session id, model proxy token)."""

BRIDGE_COMMAND_TYPES: frozenset[str] = frozenset({
    QUERY, INTERRUPT, SHUTDOWN, EXEC, BIND, MODEL_RESPONSE_HEAD, MODEL_RESPONSE_CHUNK,
    MODEL_RESPONSE_END})


@dataclass(frozen=True, slots=True)
class Event:
    """One agent event: its type name and its JSON payload, never re-encoded."""

    type: str
    data: bytes
    hint: int | None = None
    """The runner's `seq_hint` for an event that came over gRPC: what the gateway
    acknowledges once logged, and resumes after (see runner/turn_relay.py)."""


def done_payload(session_id: str, status: str) -> bytes:
    """A `done` event's payload: `{"sessionId", "status"}` ("ok", "interrupted", "error")."""
    return orjson.dumps({"sessionId": session_id, "status": status})
