"""A hostile bridge, for tests/test_bridge_forgery.py: the real bridge (runner/bridge/server.py)
with an agent that attacks the runner through the bridge socket, as a compromised bridge
or an agent that reached the socket could. It runs inside a real bubblewrap sandbox:
tests/hostile_gateway.py makes the sandbox's bootstrap execute this file's text instead
of importing runner.bridge.server's main (the sandbox sees no tests/ directory).

The prompt's first word names the attack; any other prompt gets an honest reply. `stderr`
writes the rest of the prompt to the bridge's stderr, `\\xNN` escapes as raw bytes. An
`exec` whose command holds `hang-forever` is never answered.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from runner.bridge import server
from wire.bridge import encode_frame

Emit = Callable[[str, bytes], Awaitable[None]]
MIB = 1024 * 1024
_background: set[asyncio.Task[None]] = set()


class HostileAgent:
    async def run_turn(self, prompt: str, options: dict[str, Any], emit: Emit) -> str:
        writer: asyncio.StreamWriter = emit.__self__._writer  # type: ignore[attr-defined]
        attack = prompt.split()[0] if prompt.split() else ""
        if attack == "unknown-type":
            await emit("shell_out", b'{"cmd": "rm -rf /"}')
        elif attack == "newline-type":
            await emit('text_delta\nid:424242\nevent:done\ndata:{"status":"ok"}\n\n"', b"{}")
        elif attack == "invalid-json":
            await emit("text_delta", b'{"text": "no end')
        elif attack == "oversized":
            await oversized(writer)
        elif attack == "flood":
            frames = encode_frame("text_delta", b'{"text":"x"}') * 10_000
            for _ in range(100):
                writer.write(frames)
                await writer.drain()
        elif attack == "between-turns":
            task = asyncio.get_running_loop().create_task(between_turns(writer))
            _background.add(task)
        elif attack == "stderr":
            raw = prompt.split(maxsplit=1)[1].encode().decode("unicode_escape")
            sys.stderr.buffer.write(raw.encode("latin-1"))
            sys.stderr.buffer.flush()
        elif attack == "half-frame":
            writer.write(struct.pack(">I", 100) + b"text_delta {")
            await writer.drain()
            await asyncio.Event().wait()  # silence, interrupt or not
        await emit("text_delta", b'{"text":"honest reply"}')
        await emit("turn_complete", b"{}")
        return "ok"

    def interrupt(self) -> None:
        """A hostile agent ignores interrupts."""


async def oversized(writer: asyncio.StreamWriter) -> None:
    """Twelve frames of almost 64 MiB each (the old per-frame limit), the issue's attack."""
    chunk = b"x" * MIB
    for _ in range(12):
        writer.write(struct.pack(">I", 64 * MIB - 1) + b"text_delta ")
        for _ in range(64):
            writer.write(chunk)
            await writer.drain()


async def between_turns(writer: asyncio.StreamWriter) -> None:
    """After the turn's `done`, while nobody reads: 256 frames of 1 MiB."""
    await asyncio.sleep(0.5)
    frame = encode_frame("text_delta", b'{"text":"' + b"y" * (MIB - 20) + b'"}')
    try:
        for _ in range(256):
            writer.write(frame)
            await writer.drain()
    except ConnectionError:
        pass


def install() -> None:
    server.load_agent = lambda backend, environ: HostileAgent()  # type: ignore[assignment]
    honest_exec = server.Bridge._exec

    async def hostile_exec(self: server.Bridge, payload: bytes) -> None:
        if b"hang-forever" in payload:
            await asyncio.Event().wait()
        await honest_exec(self, payload)

    server.Bridge._exec = hostile_exec  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    sys.exit(server.main())
