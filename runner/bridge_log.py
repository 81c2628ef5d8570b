"""Reading a session's `bridge.log` back (`GET /api/sessions/{id}/logs`).

The log is what the sandbox wrote to its stdout and stderr (one pipe, copied by the
runner, `runner/sandbox.py LogPump`): hostile bytes. So the file is opened without
following a link and only if it is a regular file, at most READ_CAP bytes of it are
read, every line is cut at LINE_CAP bytes and decoded with replacement, and one call
returns at most `limit` lines. A line's index is its line number in the file (from 0),
so `after` pages through it; a last line without its newline yet is left for later.
The lines carry no time of their own: `ts` is the file's last write.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

READ_CAP = 8 * 1024 * 1024
"""Bytes of a log read (the pump keeps 1 MiB per bridge start; restarts append)."""
LINE_CAP = 8192
MAX_LINES = 1000
"""Lines per answer; a client pages on with `after`."""
LOG_LEVELS = ("stdout", "stderr", "system")
LEVEL = "stderr"
"""The bridge's stdout and stderr share one pipe: its lines are reported as stderr."""


@dataclass(frozen=True, slots=True)
class LogLine:
    index: int
    text: str
    level: str = LEVEL


@dataclass(frozen=True, slots=True)
class LogPage:
    lines: list[LogLine] = field(default_factory=list)
    modified: float = 0.0
    """Unix time of the log's last write (0 when there is no log)."""


def read_log(path: Path, after: int = -1, limit: int = MAX_LINES) -> LogPage:
    """The complete lines of the log at `path` whose index is above `after`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return LogPage()
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return LogPage()
        data = _read_at_most(fd, READ_CAP)
    finally:
        os.close(fd)
    lines = data.split(b"\n")[:-1]  # the last piece is not a line (yet)
    start = max(after + 1, 0)
    page = [LogLine(index, _text(raw)) for index, raw in
            enumerate(lines[start:start + max(limit, 0)], start=start)]
    return LogPage(page, info.st_mtime)


def _read_at_most(fd: int, cap: int) -> bytes:
    chunks: list[bytes] = []
    left = cap
    while left > 0:
        chunk = os.read(fd, min(left, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _text(raw: bytes) -> str:
    return raw[:LINE_CAP].rstrip(b"\r").decode("utf-8", "replace")
