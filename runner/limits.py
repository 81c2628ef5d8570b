"""Per-sandbox resource limits: their defaults, an agent's overrides, and how a hit is told.

An agent's `agent.json` may carry `"limits": {"memory_mb": 256, "pids": 32, "cpus": 0.5,
"disk_mb": 100, "tmp_mb": 32}`; what it leaves out comes from the runner's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import orjson

MIB = 1024 * 1024

_RANGES: dict[str, tuple[float, float]] = {
    "memory_mb": (32, 1024 * 1024),
    "pids": (8, 1_000_000),
    "cpus": (0.01, 1024),
    "disk_mb": (16, 16 * 1024 * 1024),
    "tmp_mb": (1, 1024 * 1024),
}
"""Accepted values. The floors leave room for the bridge itself (a Python process and
bubblewrap's two helpers) so a limit set too low fails loudly, not mysteriously."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one sandbox may use. Memory has no swap on top; /tmp is RAM, so it counts too."""

    memory_mb: int = 512
    pids: int = 64
    """Processes and threads, bubblewrap's two helpers included."""
    cpus: float = 1.0
    disk_mb: int = 1024
    """The workspace's size."""
    tmp_mb: int = 64

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MIB

    def with_config(self, config: Mapping[str, Any]) -> SandboxLimits:
        """These limits overridden by an agent config's `limits` object; ValueError names
        the first bad field."""
        raw = config.get("limits")
        if raw is None:
            return self
        if not isinstance(raw, dict):
            raise ValueError("agent config `limits` must be an object")
        known = {f.name for f in fields(self)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"agent config `limits` has unknown keys: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        changes: dict[str, float] = {}
        for name, value in raw.items():
            low, high = _RANGES[name]
            integral = name != "cpus"
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                integral and not float(value).is_integer()
            ) or not math.isfinite(value) or not low <= value <= high:
                kind = "an integer" if integral else "a number"
                raise ValueError(f"agent config `limits.{name}` must be {kind} "
                                 f"from {low:g} to {high:g}, not {value!r}")
            changes[name] = int(value) if integral else float(value)
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_json(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class LimitHit:
    """A sandbox stopped by one of its limits: what the client is told."""

    kind: str
    """memory, pids or disk."""
    message: str
    limit: float
    unit: str

    @property
    def code(self) -> str:
        return f"{self.kind}_limit"

    def payload(self) -> bytes:
        """The `error` event's JSON: the message, a code per cause, and the limit."""
        return orjson.dumps({"error": self.message, "code": self.code,
                             "limit": self.limit, "unit": self.unit})


def memory_hit(limits: SandboxLimits) -> LimitHit:
    return LimitHit("memory", f"out of memory: the sandbox exceeded its {limits.memory_mb} MiB "
                              "memory limit and was killed", limits.memory_mb, "MiB")


def pids_hit(limits: SandboxLimits) -> LimitHit:
    return LimitHit("pids", f"process limit: the sandbox reached its limit of {limits.pids} "
                            "processes and was killed", limits.pids, "processes")


def disk_hit(limits: SandboxLimits) -> LimitHit:
    return LimitHit("disk", f"disk full: the workspace reached its {limits.disk_mb} MiB disk "
                            "limit; the sandbox was stopped", limits.disk_mb, "MiB")
