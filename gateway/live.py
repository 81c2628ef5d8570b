"""Live fan-out of a session's events to the clients reading it.

Each reading client holds a `Subscriber`: a small bounded queue of encoded SSE
frames. A turn's producer `publish`es each frame to every subscriber of its
session and waits while one is full — that wait is what carries a slow
reader's backpressure back to the agent. A subscriber that is closed (its
client left, or was cut after the write timeout) never blocks the producer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

SUBSCRIBER_CAPACITY = 32
"""Frames queued per reading client before the session's producer waits."""


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    type: str
    sse: bytes
    """The whole SSE frame, encoded once and shared by every subscriber."""


class Subscriber:
    def __init__(self, capacity: int = SUBSCRIBER_CAPACITY) -> None:
        self._frames: deque[Frame] = deque()
        self._capacity = capacity
        self._changed = asyncio.Event()
        self.closed = False

    async def put(self, frame: Frame) -> None:
        """Queue a frame, waiting while the queue is full; a no-op once closed."""
        while len(self._frames) >= self._capacity and not self.closed:
            self._changed.clear()
            await self._changed.wait()
        if not self.closed:
            self._frames.append(frame)
            self._changed.set()

    async def take(self, idle_limit: float | None = None) -> list[Frame] | None:
        """Every queued frame, at least one, oldest first; None once closed. Raises
        TimeoutError if none came in `idle_limit`. Taking them all at once lets a
        burst go to the client in one write instead of one per event."""
        while not self._frames and not self.closed:
            self._changed.clear()
            async with asyncio.timeout(idle_limit):
                await self._changed.wait()
        if self.closed:
            return None
        frames = list(self._frames)
        self._frames.clear()
        self._changed.set()
        return frames

    def close(self) -> None:
        self.closed = True
        self._frames.clear()
        self._changed.set()


class Feeds:
    """Every session's current subscribers."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = {}

    def subscribe(self, session_id: str, capacity: int = SUBSCRIBER_CAPACITY) -> Subscriber:
        subscriber = Subscriber(capacity)
        self._subscribers.setdefault(session_id, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, session_id: str, subscriber: Subscriber) -> None:
        subscriber.close()
        subscribers = self._subscribers.get(session_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[session_id]

    async def publish(self, session_id: str, frame: Frame) -> None:
        for subscriber in list(self._subscribers.get(session_id, ())):
            await subscriber.put(frame)

    def close_session(self, session_id: str) -> None:
        """End every reader of a session (it ended): their streams finish."""
        for subscriber in self._subscribers.pop(session_id, set()):
            subscriber.close()

    def count(self, session_id: str) -> int:
        return len(self._subscribers.get(session_id, ()))
