"""Noticing the moment a sandbox hits its memory or process limit, so it can be stopped whole.

The kernel enforces the limits; this only makes the outcome deterministic. An OOM kill
may take any one process and a fork bomb just spins at `pids.max`, so on the first
hit the runner kills the whole sandbox and tells the client why (a sandbox killed by
a limit pauses its session). How a hit is noticed:

* v2: `memory.events` and `pids.events` raise a file-modified event (inotify);
* v1 memory: an eventfd registered with `cgroup.event_control` for OOM;
* v1 pids: no notification exists, so `pids.events` is read every `poll_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.cgroups import SandboxCgroup

IN_MODIFY = 0x2
_EVENT = struct.Struct("iIII")
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(eq=False)
class _Watch:
    cgroup: SandboxCgroup
    on_hit: Callable[[], None]
    inotify_wds: list[int] = field(default_factory=list)


class LimitWatcher:
    """Calls a sandbox's `on_hit` once, soon after its cgroup records a limit hit."""

    def __init__(self, poll_interval: float = 0.5) -> None:
        self._poll_interval = poll_interval
        self._watches: dict[SandboxCgroup, _Watch] = {}
        self._by_wd: dict[int, _Watch] = {}
        self._inotify_fd: int | None = None
        self._poller: asyncio.Task[None] | None = None

    def watch(self, cgroup: SandboxCgroup, on_hit: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        watch = _Watch(cgroup, on_hit)
        self._watches[cgroup] = watch
        eventfd = cgroup.event_fd()
        if eventfd is not None:
            loop.add_reader(eventfd, self._on_eventfd, watch, eventfd)
        for path in cgroup.notify_files():
            wd = self._add_inotify(loop, path)
            watch.inotify_wds.append(wd)
            self._by_wd[wd] = watch
        if cgroup.polled and (self._poller is None or self._poller.done()):
            self._poller = loop.create_task(self._poll())

    def unwatch(self, cgroup: SandboxCgroup) -> None:
        watch = self._watches.pop(cgroup, None)
        if watch is None:
            return
        eventfd = cgroup.event_fd()
        if eventfd is not None:
            asyncio.get_running_loop().remove_reader(eventfd)
        for wd in watch.inotify_wds:
            self._by_wd.pop(wd, None)
            if self._inotify_fd is not None:
                _libc.inotify_rm_watch(self._inotify_fd, wd)

    def close(self) -> None:
        for cgroup in list(self._watches):
            self.unwatch(cgroup)
        if self._poller is not None:
            self._poller.cancel()
        if self._inotify_fd is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._inotify_fd)
            os.close(self._inotify_fd)
            self._inotify_fd = None

    def _check(self, watch: _Watch) -> None:
        if self._watches.get(watch.cgroup) is not watch:
            return
        counters = watch.cgroup.counters()
        if counters.oom_kills or counters.pids_max_hits:
            self.unwatch(watch.cgroup)
            watch.on_hit()

    def _on_eventfd(self, watch: _Watch, eventfd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(eventfd, 8)
        self._check(watch)

    def _add_inotify(self, loop: asyncio.AbstractEventLoop, path: Path) -> int:
        if self._inotify_fd is None:
            fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1 failed")
            self._inotify_fd = fd
            loop.add_reader(fd, self._on_inotify)
        wd = _libc.inotify_add_watch(self._inotify_fd, os.fsencode(path), IN_MODIFY)
        if wd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_add_watch {path}: {os.strerror(errno)}")
        return int(wd)

    def _on_inotify(self) -> None:
        assert self._inotify_fd is not None
        try:
            data = os.read(self._inotify_fd, 65536)
        except BlockingIOError:
            return
        touched: dict[int, _Watch] = {}
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, name_len = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + name_len
            if (watch := self._by_wd.get(wd)) is not None:
                touched[id(watch)] = watch
        for watch in touched.values():
            self._check(watch)

    async def _poll(self) -> None:
        while polled := [w for w in self._watches.values() if w.cgroup.polled]:
            for watch in polled:
                self._check(watch)
            await asyncio.sleep(self._poll_interval)
