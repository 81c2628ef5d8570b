"""Warm pool: sandboxes started ahead of their sessions, so that creating one only binds it.

A cold create spends ~130 ms, almost all of it in the bridge's Python start-up. A warm
sandbox has done all of that already — its workspace disk made and mounted, its cgroup,
bubblewrap, the bridge started with its agent backend's code imported — and waits,
bound to no session, for `bind`. Each one has a directory of its own:

    sandboxes/.pool/<slot>/workspace.img, workspace/   a fresh disk of the default size
    sandboxes/.pool/<slot>/agent/                      empty; read-only in the sandbox at /agent
    sandboxes/.pool/<slot>/bridge.log

Binding it to a session (`WarmPool.bind`): the agent's folder is copied (hard links
where it can) into its `agent/`, the slot directory is renamed to `sandboxes/<session>/`
(the mounted disk and the log move with it, so the session's workspace is exactly where
a cold resume looks for it), and the `bind` frame gives the bridge what a bridge
spawned for that session gets in its environment (`runner.sandbox.session_env`). The
bridge then loads its agent and sends `ready`. A slot serves one session, once:
nothing of one session or agent is ever visible to another.

Only sessions that a warm sandbox fits are served from the pool: a new workspace (a
cold resume keeps its own disk), the pool's agent backend (it decides what the sandbox
mounts) and the default limits (the disk size and /tmp are fixed when it starts). Every
other create takes the cold path, as does every create while the pool is empty.

The pool refills in the background one sandbox at a time, so a refill takes at most
one core from the sessions being served. A warm bridge that dies while it waits (an
OOM kill, a crash) is dropped and replaced; a create never gets a dead one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from runner.backend import AgentSpec, PoolStats, SandboxStartError
from runner.bridge_client import BridgeClient
from runner.isolation import BwrapIsolation
from runner.sandbox import (
    BridgeProcess,
    BridgeSettings,
    SandboxSpec,
    discard_bridge,
    first_event,
    killer,
    reap,
    spawn_bridge,
)
from wire import events
from wire.events import Event

log = logging.getLogger("ash.runner")

POOL_DIR = ".pool"
"""Under the sandboxes directory; session ids cannot start with a dot."""
AGENT_DIR = "agent"
SIZE_ENV = "ASH_WARM_POOL"
DEFAULT_SIZE = 2
RETRY_DELAY = (1.0, 30.0)
"""Seconds before retrying a warm sandbox that failed to start, doubling up to the second."""


@dataclass(eq=False)
class WarmSandbox:
    """A started sandbox waiting for its session."""

    spec: SandboxSpec
    """The slot's: `session_id` is the slot's name, `sandbox_dir` its directory."""
    bridge: BridgeProcess
    client: BridgeClient
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return not self.client.closed and self.bridge.process.returncode is None

    @property
    def agent_dir(self) -> Path:
        return self.spec.sandbox_dir / AGENT_DIR


class WarmPool:
    """Up to `size` warm sandboxes of one runner, refilled in the background."""

    def __init__(self, size: int, isolation: BwrapIsolation, sandboxes_dir: Path,
                 settings: BridgeSettings, *, ready_timeout: float = 30.0,
                 stop_timeout: float = 2.0, room: Callable[[], bool] | None = None) -> None:
        """`room`: whether the backend's cap on live sandboxes (this pool's counted in it)
        leaves room for one more; the pool starts none while it says no."""
        self.size = size
        self._room = room or (lambda: True)
        self._isolation = isolation
        self._dir = sandboxes_dir / POOL_DIR
        self._settings = settings
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._ready: list[WarmSandbox] = []
        self._starting = 0
        self._served = 0
        self._wanted = asyncio.Event()
        self._refill: asyncio.Task[None] | None = None
        self._discarding: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin filling the pool (in the running event loop)."""
        if self._refill is None and self.size > 0:
            self._refill = asyncio.get_running_loop().create_task(self._fill())

    # serving

    def fits(self, spec: SandboxSpec) -> bool:
        """Whether a warm sandbox can serve `spec`'s session: a new one (no directory here:
        a cold resume keeps its workspace), an agent folder that exists, the pool's backend
        and the default limits (the ones its sandboxes were started with). Two stat calls,
        cheaper inline than a thread hop."""
        if (spec.backend != self._settings.agent_backend or os.path.lexists(spec.sandbox_dir)
                or not os.path.isdir(spec.agent.path)):
            return False
        try:
            return self._isolation.limits_for(spec) == self._isolation.defaults
        except SandboxStartError:
            return False  # bad limits: the cold path says so

    def take(self) -> WarmSandbox | None:
        """A live warm sandbox, now the caller's (to `bind`, or `discard`), or None."""
        while self._ready:
            warm = self._ready.pop(0)
            if warm.watcher is not None:
                warm.watcher.cancel()
            if warm.alive:
                return warm  # its replacement starts once it is bound: not beside the bind
            self._discard_later(warm)
            self._wanted.set()
        return None

    async def bind(self, warm: WarmSandbox, spec: SandboxSpec, env: dict[str, str]) -> Event:
        """Make `warm` the sandbox of `spec`'s session: the agent's folder in its /agent,
        its directory renamed to the session's, the session's variables (`env`, from
        `runner.sandbox.session_env`) sent in `bind`; returns the bridge's `ready`. On any
        failure (SandboxStartError when the bridge died) the sandbox is stopped and its
        directory, wherever it got to, removed."""
        moving = asyncio.get_running_loop().run_in_executor(None, self._move_in, warm, spec)
        try:
            await asyncio.shield(moving)
            warm.client.send(events.BIND, orjson.dumps({"env": env}))
            ready = await first_event(warm.client, warm.bridge, self._isolation, events.READY,
                                      self._ready_timeout)
        except BaseException:
            await asyncio.wait({moving})  # cancelled: the move still runs; then clean up
            await discard_bridge(warm.bridge, warm.client, self._isolation)
            await self._isolation.remove(warm.spec.sandbox_dir)
            raise
        finally:
            self._wanted.set()
        self._served += 1
        return ready

    def _move_in(self, warm: WarmSandbox, spec: SandboxSpec) -> None:
        """The agent's folder into the slot, the slot to the session's directory: one
        thread hop for both (a create waits for it)."""
        try:
            copy_agent(Path(spec.agent.path), warm.agent_dir)
        except OSError as exc:
            raise SandboxStartError(f"cannot copy the agent folder: {exc}") from exc
        self._isolation.adopt(warm.bridge, warm.spec.sandbox_dir, spec.sandbox_dir)
        warm.spec = spec

    async def discard(self, warm: WarmSandbox) -> None:
        """Stop a warm sandbox that will serve nobody and delete its directory."""
        warm.client.close()  # a waiting bridge exits on EOF
        await reap(warm.bridge, self._stop_timeout)
        await discard_bridge(warm.bridge, warm.client, self._isolation)
        await self._isolation.remove(warm.spec.sandbox_dir)

    def stats(self) -> PoolStats:
        return PoolStats(size=self.size, ready=sum(1 for w in self._ready if w.alive),
                         starting=self._starting, served=self._served)

    async def close(self) -> None:
        """Stop filling, stop every warm sandbox and delete its directory."""
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.gather(self._refill, return_exceptions=True)
        ready, self._ready = self._ready, []
        for warm in ready:
            if warm.watcher is not None:
                warm.watcher.cancel()
        await asyncio.gather(*(self.discard(warm) for warm in ready), *self._discarding,
                             return_exceptions=True)
        await self._isolation.remove(self._dir)

    # filling

    async def _fill(self) -> None:
        """Keep `size` sandboxes warm, starting one at a time."""
        await self._isolation.remove(self._dir)  # what a runner that died left
        delay = RETRY_DELAY[0]
        while True:
            while len(self._ready) >= self.size or not self._room():
                self._wanted.clear()
                await self._wanted.wait()
            self._starting = 1
            try:
                warm = await self._start_one()
            except Exception as exc:
                self._starting = 0
                log.warning("warm pool: a sandbox failed to start (retrying in %g s): %s",
                            delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY[1])
                continue
            self._starting = 0
            delay = RETRY_DELAY[0]
            warm.watcher = asyncio.get_running_loop().create_task(self._watch(warm))
            self._ready.append(warm)

    async def _start_one(self) -> WarmSandbox:
        slot = f"warm-{secrets.token_hex(6)}"
        sandbox_dir = self._dir / slot
        spec = SandboxSpec(slot, AgentSpec(name="", path=str(sandbox_dir / AGENT_DIR)),
                           sandbox_dir, self._settings)
        try:
            await asyncio.to_thread(os.makedirs, spec.agent.path, 0o755)
            await self._isolation.prepare(spec, None)
            try:
                bridge = await spawn_bridge(spec, self._isolation, warm=True)
                client: BridgeClient | None = None
                try:
                    client = await BridgeClient.connect(
                        bridge.sock, limits=self._settings.limits, on_violation=killer(bridge),
                        warm=True)
                    await first_event(client, bridge, self._isolation, events.WARM,
                                      self._ready_timeout)
                    return WarmSandbox(spec, bridge, client)
                except BaseException:
                    await discard_bridge(bridge, client, self._isolation)
                    raise
            except BaseException:
                await self._isolation.release_workspace(spec)
                raise
        except BaseException:
            await self._isolation.remove(sandbox_dir)
            raise

    async def _watch(self, warm: WarmSandbox) -> None:
        """Drop a warm sandbox whose bridge exits while it waits, so the pool refills."""
        await warm.bridge.process.wait()
        if warm in self._ready:
            self._ready.remove(warm)
            log.warning("warm pool: sandbox %s exited while waiting (code %s); replacing it",
                        warm.spec.session_id, warm.bridge.process.returncode)
            self._wanted.set()
            self._discard_later(warm)

    def wake(self) -> None:
        """Look again whether to start one: room under the cap may have come free."""
        self._wanted.set()

    def discard_later(self, warm: WarmSandbox) -> None:
        """`discard` in the background (a taken sandbox no session will use)."""
        self._discard_later(warm)

    def _discard_later(self, warm: WarmSandbox) -> None:
        task = asyncio.get_running_loop().create_task(self.discard(warm))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)


def copy_agent(source: Path, target: Path) -> None:
    """The agent's folder into a warm sandbox's (empty) agent directory, symbolic links as
    links — what the sandbox would have seen with the folder itself mounted. Files are hard
    links where the folder is on the data dir's filesystem (it is when deployed): a tenth
    of a copy's cost, and the same inodes a cold sandbox's bind mount would show."""
    if not source.is_dir():
        raise FileNotFoundError(f"agent folder not found: {source}")
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True,
                    copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def add_warm_pool_argument(parser: argparse.ArgumentParser,
                           environ: Mapping[str, str] = os.environ) -> None:
    """`--warm-pool N` (ASH_WARM_POOL), the same for every entry point that runs sandboxes."""
    raw = environ.get(SIZE_ENV) or str(DEFAULT_SIZE)
    parser.add_argument(
        "--warm-pool", type=_count, default=raw, metavar="N",
        help="sandboxes kept started ahead of their sessions, so a create only binds one "
        f"(bwrap sandbox only; 0 = off; ASH_WARM_POOL, default {DEFAULT_SIZE})")


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"must be a number of sandboxes, not {raw!r}")
    return int(raw)
