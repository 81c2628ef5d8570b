"""Session state kept off the runners: `data/state/<session>/`, one archive per session.

In coordinator mode a runner ships a session's state (its workspace, the agent's
conversation files included, as a gzip tar) after every completed turn and on
pause; a cold resume restores it on whichever runner is healthy.

Each save writes a new generation: a temporary file, renamed to the next number,
then the older numbers are removed. A reader takes the highest number, so it
sees the previous state or the next one, never half of one. Renaming to a fresh
name, not over the old file, matters on ext4: replacing a file by rename makes
the kernel start writing it out at once (auto_da_alloc), 190 us against 45 us
here. That is cheap enough to do on the event loop for a small state, which
saves the thread hop a turn's `done` would otherwise wait for.

Without `fsync` a saved state survives a gateway crash, like the event log's WAL
commits (synchronous=NORMAL); with it, a power loss too, at the price of disk
flushes per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from pathlib import Path

from runner.grpc_transport import DEFAULT_STATE_MAX_BYTES

DEFAULT_MAX_BYTES = DEFAULT_STATE_MAX_BYTES
INLINE_MAX_BYTES = 256 * 1024
"""States up to this size are written on the event loop; bigger ones in a thread."""
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class StateStore:
    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 fsync: bool = False) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        """Largest state kept; a runner refuses to ship a bigger one (a clear turn error)."""
        self._fsync = fsync
        self._generations: dict[str, int] = {}
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, session_id: str) -> Path:
        """The session's directory of state generations."""
        if not _SESSION_ID.fullmatch(session_id) or ".." in session_id:
            raise ValueError(f"invalid session id: {session_id!r}")
        return self.root / session_id

    async def save(self, session_id: str, state: bytes) -> None:
        """Replace the session's stored state; durable when this returns."""
        directory = self.path(session_id)
        generation = self._generations.get(session_id)
        if generation is None:
            generation = max(_generations(directory), default=0)
        self._generations[session_id] = generation + 1
        if len(state) <= INLINE_MAX_BYTES and not self._fsync:
            self._write(directory, generation + 1, state)
        else:
            await asyncio.to_thread(self._write, directory, generation + 1, state)

    def read(self, session_id: str) -> bytes | None:
        """The latest stored state, or None when the session never shipped one."""
        directory = self.path(session_id)
        for generation in sorted(_generations(directory), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                return (directory / str(generation)).read_bytes()
        return None

    async def load(self, session_id: str) -> bytes | None:
        if session_id not in self._generations and not self.path(session_id).exists():
            return None  # a new session: no thread hop for nothing (a create waits on it)
        return await asyncio.to_thread(self.read, session_id)

    def delete(self, session_id: str) -> None:
        self._generations.pop(session_id, None)
        shutil.rmtree(self.path(session_id), ignore_errors=True)

    def _write(self, directory: Path, generation: int, state: bytes) -> None:
        directory.mkdir(exist_ok=True)
        staging = directory / f".{generation}.partial"
        try:
            with open(staging, "wb") as file:
                file.write(state)
                if self._fsync:
                    file.flush()
                    os.fsync(file.fileno())
            os.rename(staging, directory / str(generation))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            raise
        if self._fsync:
            handle = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        for older in _generations(directory):
            if older < generation:
                with contextlib.suppress(FileNotFoundError):
                    (directory / str(older)).unlink()


def _generations(directory: Path) -> list[int]:
    try:
        return [int(name) for name in os.listdir(directory) if name.isdigit()]
    except FileNotFoundError:
        return []
