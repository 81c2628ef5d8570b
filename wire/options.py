"""The per-message options a client may set (client -> gateway -> bridge), and their bounds.

The gateway refuses a value outside its bounds with a 400 naming the option; the
agent backends in the sandbox clamp to the same bounds, trusting no one upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DELAY_MS = 60_000
"""The longest pause a mock pacing option may ask for, in milliseconds."""
MAX_TOKENS = 100_000
"""The most `text_delta` events a mock reply may be split into."""
MAX_AGENT_TURNS = 1_000
"""The most agent turns (model round trips) `maxTurns` may allow for one message."""
MAX_MODEL_NAME = 200
"""The longest `model` name accepted, in characters."""
EFFORTS = ("low", "medium", "high", "max")
THINKING_TYPES = ("enabled", "disabled", "adaptive")
MIN_THINKING_BUDGET = 1024
MAX_THINKING_BUDGET = 1_000_000
MAX_BUDGET_USD = 1_000_000
"""The reference's per-message model settings (`effort`, `thinking`, `maxBudgetUsd`)."""


@dataclass(frozen=True, slots=True)
class NumericOption:
    name: str
    low: int
    high: int
    integer: bool
    unit: str = ""


NUMERIC_OPTIONS: dict[str, NumericOption] = {
    option.name: option for option in (
        NumericOption("firstTokenDelayMs", 0, MAX_DELAY_MS, integer=False, unit="ms"),
        NumericOption("tokenIntervalMs", 0, MAX_DELAY_MS, integer=False, unit="ms"),
        NumericOption("tokens", 1, MAX_TOKENS, integer=True),
        NumericOption("maxTurns", 1, MAX_AGENT_TURNS, integer=True),
    )
}
"""Every numeric option an agent backend reads (runner/bridge/mock_agent.py, claude_agent.py)."""
