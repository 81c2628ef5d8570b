"""Running a shell command inside the sandbox: own process group, capped output, time limit.

Used by the `exec` command (a user's command in the session's sandbox) and by
the mock agent's Bash tool. A command that outlives its time limit, or whose
`stop` event is set, is killed with its whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ShellResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    """Empty when stderr was merged into stdout."""
    truncated: bool
    timed_out: bool
    stopped: bool


async def run_shell(
    command: str,
    cwd: Path,
    *,
    time_limit: float,
    cap: int,
    stop: asyncio.Event | None = None,
    merge_stderr: bool = False,
) -> ShellResult:
    """Run `/bin/sh -c command`; each output stream keeps its first `cap` bytes."""
    proc = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    readers = [asyncio.create_task(read_capped(proc.stdout, cap))]
    if proc.stderr is not None:
        readers.append(asyncio.create_task(read_capped(proc.stderr, cap)))
    reading = asyncio.gather(*readers)
    stopping = asyncio.create_task((stop or asyncio.Event()).wait())
    timed_out = stopped = False
    try:
        finished, _ = await asyncio.wait(
            {reading, stopping}, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED
        )
        if reading not in finished:
            stopped = stopping in finished
            timed_out = not stopped
            kill_group(proc.pid)
            await asyncio.wait({reading}, timeout=5)
        outputs = reading.result() if reading.done() else [(b"", False)] * len(readers)
        exit_code = await proc.wait()
    finally:
        stopping.cancel()
        if not reading.done():
            reading.cancel()
        kill_group(proc.pid)
    stdout, stdout_cut = outputs[0]
    stderr, stderr_cut = outputs[1] if len(outputs) > 1 else (b"", False)
    return ShellResult(exit_code, stdout, stderr, stdout_cut or stderr_cut, timed_out, stopped)


async def read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Read to EOF, keeping the first `cap` bytes; the rest is drained and dropped."""
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if len(chunk) > room:
            truncated = True
        if room > 0:
            kept += chunk[:room]
    return bytes(kept), truncated


def kill_group(pgid: int) -> None:
    """Kill a command's whole process group (what it forked too); gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
