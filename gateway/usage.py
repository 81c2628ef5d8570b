"""Usage metering: the figures of each finished turn, as the gateway logs its end.

A turn's `turn_complete` carries the model usage the agent backend reported (the Claude
CLI's result, the mock agent's count); the gateway counts the turn's `tool_use` events and
measures its wall time itself. At the turn's `done` the figures become `UsageRow`s that go
to the store in the batch that logs the `done` (`EventLog.record_usage`): no store write of
their own.

The bridge is hostile: a figure it reports is taken only when it is a non-negative integer
below `MAX_REPORTED`, and anything else in the payload is ignored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import orjson

from gateway.store import DEFAULT_TENANT, SessionRow, UsageRow
from wire import events

INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"
CACHE_CREATION_TOKENS = "cache_creation_tokens"
CACHE_READ_TOKENS = "cache_read_tokens"
TOOL_CALL = "tool_call"
MESSAGE = "message"
COMPUTE_SECONDS = "compute_seconds"
EVENT_TYPES = (INPUT_TOKENS, OUTPUT_TOKENS, CACHE_CREATION_TOKENS, CACHE_READ_TOKENS,
               TOOL_CALL, MESSAGE, COMPUTE_SECONDS)
"""The reference's usage event types, and the one it declares but never records
(compute_seconds)."""

REPORTED_FIELDS = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                   "cache_creation_input_tokens": CACHE_CREATION_TOKENS,
                   "cache_read_input_tokens": CACHE_READ_TOKENS}
"""`turn_complete.usage` field (the Anthropic API's names) → usage event type."""
MAX_REPORTED = 10**12

STATS_FIELDS = {"totalInputTokens": INPUT_TOKENS, "totalOutputTokens": OUTPUT_TOKENS,
                "totalCacheCreationTokens": CACHE_CREATION_TOKENS,
                "totalCacheReadTokens": CACHE_READ_TOKENS, "totalToolCalls": TOOL_CALL,
                "totalMessages": MESSAGE, "totalComputeSeconds": COMPUTE_SECONDS}
"""The reference's UsageStats, each the sum of one event type."""


def session_tenant(row: SessionRow) -> str:
    """The tenant a session's usage is billed to: its own once sessions carry one."""
    return getattr(row, "tenant_id", DEFAULT_TENANT)


def reported_tokens(data: bytes) -> dict[str, int]:
    """The token counts a `turn_complete` payload reports, each one checked."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return {}
    tokens: dict[str, int] = {}
    for name, event_type in REPORTED_FIELDS.items():
        value = usage.get(name)
        if type(value) is int and 0 <= value < MAX_REPORTED:
            tokens[event_type] = value
    return tokens


@dataclass(slots=True)
class TurnMeter:
    """What one turn used, gathered from its events as they are sequenced."""

    started: float = field(default_factory=time.monotonic)
    tool_calls: int = 0
    completed: bool = False
    tokens: dict[str, int] = field(default_factory=dict)

    def observe(self, event: events.Event) -> None:
        if event.type == events.TOOL_USE:
            self.tool_calls += 1
        elif event.type == events.TURN_COMPLETE:
            self.completed = True
            self.tokens = reported_tokens(event.data)

    def rows(self, row: SessionRow) -> list[UsageRow]:
        """The turn's figures as usage rows (a zero is not recorded, as the reference does;
        a turn that never completed counts no message)."""
        figures: dict[str, float] = dict(self.tokens)
        figures[TOOL_CALL] = self.tool_calls
        figures[MESSAGE] = 1 if self.completed else 0
        figures[COMPUTE_SECONDS] = round(time.monotonic() - self.started, 3)
        now = time.time()
        tenant = session_tenant(row)
        return [UsageRow(str(uuid.uuid4()), tenant, row.id, row.agent, event_type, value, now)
                for event_type, value in figures.items() if value > 0]


def stats_json(totals: dict[str, float]) -> dict[str, float]:
    """The reference's UsageStats from each event type's sum."""
    return {name: totals.get(event_type, 0) for name, event_type in STATS_FIELDS.items()}
