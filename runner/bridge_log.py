"""Reading a session's `bridge.log` back (`GET /api/sessions/{id}/logs`).

The log is what the sandbox wrote to its stdout and stderr (one pipe, copied by the
runner, `runner/sandbox.py LogPump`): hostile bytes. So the file is opened without
following a link and only if it is a regular file, at most READ_CAP bytes of it are
read, every line is cut at LINE_CAP bytes and decoded with replacement, and one call
returns at most `limit` lines and ANSWER_CAP bytes of them (a flood of empty lines costs
no more than a count: lines are found in place, never split out all at once). A line's
index is its line number in the file (from 0), so `after` pages through it; a last line
without its newline yet is left for later.
The lines carry no time of their own: `ts` is the file's last write.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

READ_CAP = 8 * 1024 * 1024
"""Bytes of a log read (the pump keeps 1 MiB per bridge start; restarts append)."""
LINE_CAP = 4096
ANSWER_CAP = 1024 * 1024
"""Bytes of lines in one answer (at least one line): with UTF-8 replacement at most
three times as much text, inside a gRPC message's default 4 MiB."""
COUNT_BLOCK = 64 * 1024
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
    start = max(after + 1, 0)
    page: list[LogLine] = []
    size = 0
    pos = _line_offset(data, start)
    while pos is not None and len(page) < limit and (size < ANSWER_CAP or not page):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # the last piece is not a line (yet)
        raw = data[pos:min(end, pos + LINE_CAP)]
        page.append(LogLine(start + len(page), _text(raw)))
        size += len(raw)
        pos = end + 1
    return LogPage(page, info.st_mtime)


def _line_offset(data: bytes, line: int) -> int | None:
    """Where line `line` starts (None: the data has fewer complete lines): newlines are
    counted a block at a time, then found one by one in the last block only."""
    pos, seen = 0, 0
    while seen < line:
        count = data.count(b"\n", pos, pos + COUNT_BLOCK)
        if seen + count < line:
            if pos + COUNT_BLOCK >= len(data):
                return None
            seen += count
            pos += COUNT_BLOCK
            continue
        while seen < line:
            pos = data.find(b"\n", pos) + 1
            seen += 1
    return pos


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
    return raw.rstrip(b"\r").decode("utf-8", "replace")
