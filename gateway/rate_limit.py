"""Rate limits per API key and per client address: in-memory token buckets, no database.

Two limits, as the reference has them: every /api/ request counts against a global one
(1500 per 15 minutes), and creates (`POST /api/sessions`, `POST /api/agents`) against a
tighter one too (20 per 15 minutes). Each is kept per client address (checked before the
key, so guessing keys is limited as well) and per API key (once the key is valid). Over a
limit a request gets 429 with `Retry-After` (whole seconds) and the JSON error body.

Off unless configured: a latency gateway's clients and benches create many sessions, and
a bucket check is still a dict lookup per request. `ASH_RATE_LIMIT=1` turns the
reference's figures on; `ASH_RATE_LIMIT_MAX`, `ASH_RATE_LIMIT_CREATES` and
`ASH_RATE_LIMIT_WINDOW` (seconds) set them (and turn limiting on); 0 disables one limit.
The address is the TCP peer's: behind a proxy, every client shares the proxy's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEFAULT_WINDOW = 900.0
DEFAULT_MAX = 1500
DEFAULT_CREATES = 20
MAX_BUCKETS = 100_000
"""Past this many tracked clients, buckets that have refilled are dropped (memory bound)."""
CREATE_ROUTES = frozenset({("POST", "/api/sessions"), ("POST", "/api/agents")})


class ConfigError(ValueError):
    """An ASH_RATE_LIMIT_* variable that is not a number in range."""


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    max_requests: int = 0
    """Requests per window per client (address, key); 0: no global limit."""
    max_creates: int = 0
    """Creates per window per client; 0: no create limit."""
    window: float = DEFAULT_WINDOW

    @property
    def enabled(self) -> bool:
        return self.max_requests > 0 or self.max_creates > 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RateLimitSettings:
        names = ("ASH_RATE_LIMIT_MAX", "ASH_RATE_LIMIT_CREATES", "ASH_RATE_LIMIT_WINDOW")
        on = env.get("ASH_RATE_LIMIT", "").lower() in ("1", "true", "yes", "on")
        if not on and not any(env.get(name) for name in names):
            return cls()
        return cls(max_requests=_int(env, names[0], DEFAULT_MAX),
                   max_creates=_int(env, names[1], DEFAULT_CREATES),
                   window=_seconds(env, names[2], DEFAULT_WINDOW))


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise ConfigError(f"{name} must be a whole number (0 disables the limit)")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name) or default)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= 86400 * 7:
        raise ConfigError(f"{name} must be between 0 and 604800 seconds")
    return value


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class TokenBuckets:
    """`capacity` tokens per client, refilled evenly over `window` seconds."""

    capacity: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[object, _Bucket] = field(default_factory=dict)

    def take(self, client: object) -> float:
        """Take a token for `client`: 0.0 if it had one, else the seconds until it will."""
        now = self.clock()
        rate = self.capacity / self.window
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now, rate)
            bucket = self._buckets[client] = _Bucket(float(self.capacity), now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _forget_full(self, now: float, rate: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        self._buckets = {client: bucket for client, bucket in self._buckets.items()
                         if bucket.tokens + (now - bucket.at) * rate < self.capacity}


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after: int
    """Whole seconds, at least 1 (the `Retry-After` header)."""
    message: str


class RateLimiter:
    def __init__(self, settings: RateLimitSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._requests = (TokenBuckets(settings.max_requests, settings.window, clock)
                          if settings.max_requests else None)
        self._creates = (TokenBuckets(settings.max_creates, settings.window, clock)
                         if settings.max_creates else None)

    def check(self, method: str, path: str, client: object) -> Refusal | None:
        """Count one request of `client` (("addr", host) or ("key", key)) on a route."""
        if self._requests is not None:
            wait = self._requests.take(client)
            if wait:
                return self._refusal(wait, self.settings.max_requests, "requests")
        if self._creates is not None and (method, path) in CREATE_ROUTES:
            wait = self._creates.take(client)
            if wait:
                return self._refusal(wait, self.settings.max_creates,
                                     "creates (POST /api/sessions, POST /api/agents)")
        return None

    def _refusal(self, wait: float, limit: int, what: str) -> Refusal:
        retry = max(1, math.ceil(wait))
        return Refusal(retry, f"rate limit exceeded: {limit} {what} per "
                              f"{self.settings.window:g} s; retry in {retry} s")
