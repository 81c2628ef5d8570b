"""cgroups for sandboxes: memory (no swap), pids and cpu limits, v2 and v1 behind one interface.

Layout, in each hierarchy used (v2: the unified one; v1: the memory, pids and cpu ones):

    <mount>/ash/<runner>/<sandbox>

`<runner>` is `<pid>.<start time>.<n>` of the process that owns it, so a runner can tell
a group left by a dead runner (reaped at start) from one of a live runner on the same
host (left alone). A sandbox's process joins its group before it executes bubblewrap,
by writing its own pid into `cgroup.procs` (see `runner.sandbox`): everything the
sandbox ever runs is a descendant, so it is born inside — no spawn-then-attach window.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from runner import mountinfo
from runner.limits import SandboxLimits

CONTROLLERS = ("memory", "pids", "cpu")
PARENT = "ash"
CPU_PERIOD_US = 100_000
_instances = itertools.count(1)


class CgroupUnavailable(Exception):
    """No cgroup hierarchy this runner can use; the message says what to configure."""


@dataclass(frozen=True, slots=True)
class CgroupCounters:
    oom_kills: int
    pids_max_hits: int


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def runner_group_name() -> str:
    return f"{os.getpid()}.{process_start_time(os.getpid())}.{next(_instances)}"


def owner_alive(group_name: str) -> bool:
    """Whether the runner that made `ash/<group_name>` still runs (unknown names count as
    alive: they are not ours to remove)."""
    parts = group_name.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return True
    return process_start_time(int(parts[0])) == int(parts[1])


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read_key(path: Path, key: str) -> int:
    """A value from a flat-keyed cgroup file (`key value` per line); 0 when absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _procs(directory: Path) -> set[int]:
    try:
        return {int(pid) for pid in (directory / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _kill_procs(directories: tuple[Path, ...]) -> None:
    for _ in range(3):
        pids = set().union(*(_procs(d) for d in directories))
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _empty_and_remove(directory: Path, timeout: float = 2.0) -> bool:
    """Kill the group's processes and remove it once they have left (they take a moment)."""
    deadline = time.monotonic() + timeout
    while not _rmdir(directory):
        if time.monotonic() > deadline:
            return False
        _kill_procs((directory,))
        time.sleep(0.005)
    return True


def _rmdir(directory: Path) -> bool:
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


class SandboxCgroup(ABC):
    """One sandbox's group (one directory per hierarchy used)."""

    version: int
    polled = False
    """True when limit hits can only be noticed by reading `counters` (v1 pids)."""

    def __init__(self, name: str, dirs: tuple[Path, ...]) -> None:
        self.name = name
        self.dirs = dirs

    @property
    def procs_files(self) -> tuple[Path, ...]:
        """Where the sandbox's first process writes its own pid."""
        return tuple(d / "cgroup.procs" for d in self.dirs)

    @abstractmethod
    def counters(self) -> CgroupCounters: ...

    def event_fd(self) -> int | None:
        """An eventfd the kernel signals on a limit hit (v1 OOM), if any."""
        return None

    def notify_files(self) -> tuple[Path, ...]:
        """Files whose modification signals a limit hit (v2 event files)."""
        return ()

    def pids(self) -> set[int]:
        return set().union(*(_procs(d) for d in self.dirs))

    def kill(self) -> None:
        """SIGKILL every process in the group."""
        _kill_procs(self.dirs)

    def try_remove(self) -> bool:
        """Remove the group's directories; False while processes remain in it."""
        return all([_rmdir(d) for d in self.dirs])


class CgroupTree(ABC):
    """The runner's own group in the hierarchy (or hierarchies) it uses, and its sandboxes."""

    version: int

    def __init__(self, name: str | None = None) -> None:
        self.name = name or runner_group_name()

    @property
    @abstractmethod
    def runner_dirs(self) -> tuple[Path, ...]: ...

    @abstractmethod
    def open(self) -> None:
        """Create the runner's group; CgroupUnavailable if it cannot be used."""

    @abstractmethod
    def create(self, name: str, limits: SandboxLimits) -> SandboxCgroup:
        """A new sandbox group with `limits` applied, ready for its first process."""

    def reap_stale(self) -> int:
        """Remove groups left by runners that are gone (their processes are killed first);
        returns how many runner groups were removed."""
        reaped = 0
        for parent in {d.parent for d in self.runner_dirs}:
            try:
                entries = [e for e in parent.iterdir() if e.is_dir()]
            except OSError:
                continue
            for entry in entries:
                if owner_alive(entry.name):
                    continue
                reaped += self._remove_runner_dir(entry)
        return reaped

    def _remove_runner_dir(self, directory: Path) -> int:
        for child in [c for c in directory.iterdir() if c.is_dir()]:
            _empty_and_remove(child)
        return int(_rmdir(directory))

    def close(self) -> None:
        """Remove the runner's group and any sandbox group still in it."""
        for directory in self.runner_dirs:
            if directory.is_dir():
                self._remove_runner_dir(directory)

    def describe(self) -> dict[str, object]:
        return {"version": self.version, "groups": [str(d) for d in self.runner_dirs]}


class V2Cgroup(SandboxCgroup):
    version = 2

    def counters(self) -> CgroupCounters:
        directory = self.dirs[0]
        return CgroupCounters(_read_key(directory / "memory.events", "oom_kill"),
                              _read_key(directory / "pids.events", "max"))

    def notify_files(self) -> tuple[Path, ...]:
        return (self.dirs[0] / "memory.events", self.dirs[0] / "pids.events")

    def kill(self) -> None:
        kill_file = self.dirs[0] / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        super().kill()


class CgroupV2(CgroupTree):
    """The unified hierarchy: one directory per group, controllers enabled top-down."""

    version = 2

    def __init__(self, root: Path, name: str | None = None) -> None:
        super().__init__(name)
        self.root = root

    @property
    def runner_dirs(self) -> tuple[Path, ...]:
        return (self.root / PARENT / self.name,)

    def open(self) -> None:
        runner_dir = self.runner_dirs[0]
        try:
            runner_dir.mkdir(parents=True, exist_ok=True)
            for directory in (self.root, self.root / PARENT, runner_dir):
                self._enable_controllers(directory)
        except OSError as exc:
            raise CgroupUnavailable(
                f"cannot set up cgroup v2 group {runner_dir}: {exc}. The runner needs write "
                "access to the cgroup tree (run it as root, or under systemd with "
                "Delegate=yes) and the memory, pids and cpu controllers enabled"
            ) from exc

    @staticmethod
    def _enable_controllers(directory: Path) -> None:
        control = directory / "cgroup.subtree_control"
        enabled = set(control.read_text().split()) if control.exists() else set()
        missing = [c for c in CONTROLLERS if c not in enabled]
        if missing:
            _write(control, " ".join(f"+{c}" for c in missing))

    def create(self, name: str, limits: SandboxLimits) -> SandboxCgroup:
        directory = self.runner_dirs[0] / name
        directory.mkdir()
        try:
            self.apply_limits(directory, limits)
        except OSError:
            _rmdir(directory)
            raise
        return V2Cgroup(name, (directory,))

    @staticmethod
    def apply_limits(directory: Path, limits: SandboxLimits) -> None:
        """Memory with no swap on top (killed whole when it runs out), pids, cpu quota."""
        _write(directory / "memory.max", str(limits.memory_bytes))
        if (directory / "memory.swap.max").exists():
            _write(directory / "memory.swap.max", "0")
        _write(directory / "memory.oom.group", "1")
        _write(directory / "pids.max", str(limits.pids))
        _write(directory / "cpu.max", f"{round(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")


class V1Cgroup(SandboxCgroup):
    version = 1
    polled = True

    def __init__(self, name: str, dirs: tuple[Path, ...], memory: Path, pids: Path,
                 oom_eventfd: int | None) -> None:
        super().__init__(name, dirs)
        self._memory = memory
        self._pids = pids
        self._eventfd = oom_eventfd

    def counters(self) -> CgroupCounters:
        return CgroupCounters(_read_key(self._memory / "memory.oom_control", "oom_kill"),
                              _read_key(self._pids / "pids.events", "max"))

    def event_fd(self) -> int | None:
        return self._eventfd

    def try_remove(self) -> bool:
        removed = super().try_remove()
        if removed and self._eventfd is not None:
            os.close(self._eventfd)
            self._eventfd = None
        return removed


class CgroupV1(CgroupTree):
    """Legacy hierarchies, one per controller (some may be co-mounted)."""

    version = 1

    def __init__(self, mounts: dict[str, Path], name: str | None = None) -> None:
        super().__init__(name)
        self.mounts = mounts

    def _dir(self, controller: str) -> Path:
        return self.mounts[controller] / PARENT / self.name

    @property
    def runner_dirs(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(self._dir(c) for c in CONTROLLERS))

    def open(self) -> None:
        for directory in self.runner_dirs:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CgroupUnavailable(
                    f"cannot create cgroup {directory}: {exc}. The runner needs write access "
                    "to the memory, pids and cpu hierarchies (run it as root)"
                ) from exc

    def create(self, name: str, limits: SandboxLimits) -> SandboxCgroup:
        dirs = tuple(dict.fromkeys(self._dir(c) / name for c in CONTROLLERS))
        made: list[Path] = []
        eventfd: int | None = None
        try:
            for directory in dirs:
                directory.mkdir()
                made.append(directory)
            memory, pids, cpu = (self._dir(c) / name for c in CONTROLLERS)
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                _write(memory / "memory.swappiness", "0")
            eventfd = _oom_eventfd(memory)
            _write(pids / "pids.max", str(limits.pids))
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(round(limits.cpus * CPU_PERIOD_US)))
        except OSError:
            if eventfd is not None:
                os.close(eventfd)
            for directory in made:
                _rmdir(directory)
            raise
        return V1Cgroup(name, dirs, memory, pids, eventfd)


def _oom_eventfd(memory_dir: Path) -> int | None:
    """An eventfd the kernel signals on each OOM in the group (v1 `cgroup.event_control`)."""
    control = memory_dir / "cgroup.event_control"
    if not control.exists():
        return None
    eventfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    oom_control = os.open(memory_dir / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _write(control, f"{eventfd} {oom_control}")
    except OSError:
        os.close(eventfd)
        raise
    finally:
        os.close(oom_control)
    return eventfd


def detect(mounts_text: str | None = None, name: str | None = None) -> CgroupTree:
    """The hierarchy to use: v2 when it has memory, pids and cpu, else v1 when all three
    are mounted; CgroupUnavailable (saying what is missing) otherwise. Not yet opened."""
    mounts = mountinfo.read() if mounts_text is None else mountinfo.parse(mounts_text)
    unified_found = []
    for mount in mounts:
        if mount.fstype != "cgroup2":
            continue
        try:
            available = set((mount.path / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        unified_found.append(f"{mount.path} ({' '.join(sorted(available)) or 'no controllers'})")
        if set(CONTROLLERS) <= available:
            return CgroupV2(mount.path, name)
    legacy = {}
    for controller in CONTROLLERS:
        for mount in mounts:
            if mount.fstype == "cgroup" and controller in mount.super_options:
                legacy[controller] = mount.path
                break
    if len(legacy) == len(CONTROLLERS):
        return CgroupV1(legacy, name)
    found = "; ".join(unified_found + [f"v1 {c} at {p}" for c, p in legacy.items()]) or "none"
    raise CgroupUnavailable(
        "no usable cgroup hierarchy: sandboxes need cgroup v2 with the memory, pids and cpu "
        "controllers available (or cgroup v1 with all three mounted). Found: "
        f"{found}. Mount cgroup2 at /sys/fs/cgroup (systemd does by default) or enable the "
        "missing controllers — or start with --sandbox=none for development only"
    )
