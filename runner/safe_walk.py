"""Walk a directory tree that someone else is changing, without ever leaving it.

The runner walks workspaces as root, in the host's namespaces, while the agent's processes
keep running in them (a snapshot before every `done`, on pause). A walk by full path
(`scandir`, then `lstat`, then `open` of the joined path) resolves every component again
at each step, so an agent that swaps a directory or a file for a symlink between two steps
sends the runner into `/etc`, `/root` or another session's workspace. This walk resolves
nothing by path:

* every directory is opened `O_DIRECTORY|O_NOFOLLOW` relative to its parent's descriptor
  (`openat`), listed through that descriptor, and checked (`fstat`) to be the directory
  that was listed (same device and inode) and on the root's device;
* every entry is `lstat`ed relative to its parent's descriptor; symlinks are reported as
  links (their text read with `readlinkat`), never followed;
* a regular file is opened `O_NOFOLLOW|O_NONBLOCK` relative to its parent (a FIFO swapped in
  cannot block the open), and the open file is checked (`fstat`) to be the entry listed, on
  the root's device;
* FIFOs, sockets and devices are left out;
* an entry that changed between listing and opening is left out and logged.

Every walk is bounded (`WalkLimits`): entries, bytes of file content, depth, and time. A
walk past a bound fails with `WalkLimitError`, a `BackendError` that says which bound:
never a hang, never a partial tree passed off as the whole.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.backend import BackendError

log = logging.getLogger("ash.runner")

GIB = 1024 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_BYTES = 2 * GIB
"""Twice the default workspace disk (1 GiB): room for a bigger disk, not for sparse files
whose size is a lie (a `truncate -s 1T` file takes no space on the disk)."""
MAX_DEPTH = 128
"""Directories deep; each level holds one descriptor open while the walk is below it."""
TIME_BUDGET = 30.0
"""Seconds for one walk, file content included."""

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHANGED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EINVAL, errno.ENXIO)
"""What opening or reading an entry that was swapped since its `lstat` fails with."""


class WalkLimitError(BackendError):
    """A walk went past one of its `WalkLimits`."""


@dataclass(frozen=True, slots=True)
class WalkLimits:
    max_entries: int = MAX_ENTRIES
    max_bytes: int = MAX_BYTES
    max_depth: int = MAX_DEPTH
    time_budget: float = TIME_BUDGET

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WalkLimits:
        """The defaults, each overridden by its ASH_SNAPSHOT_* variable when set; ValueError
        names a variable that is not a positive number."""
        def read(name: str, default: float, kind: type[int] | type[float]) -> Any:
            raw = environ.get(name)
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                value = 0
            if not value > 0:
                raise ValueError(f"{name} must be a positive number, not {raw!r}")
            return value

        return cls(
            max_entries=read("ASH_SNAPSHOT_MAX_ENTRIES", MAX_ENTRIES, int),
            max_bytes=read("ASH_SNAPSHOT_MAX_BYTES", MAX_BYTES, int),
            max_depth=read("ASH_SNAPSHOT_MAX_DEPTH", MAX_DEPTH, int),
            time_budget=read("ASH_SNAPSHOT_TIME_BUDGET", TIME_BUDGET, float),
        )


SNAPSHOT_LIMITS = WalkLimits.from_env()
"""The limits of every walk that is given none: the defaults or the ASH_SNAPSHOT_* variables
(read once, at start)."""


@dataclass(slots=True)
class Entry:
    """One entry of the tree, valid while the walk is at it (its `parent_fd` is open)."""

    path: str
    """Relative to the root, `/`-separated."""
    name: str
    parent_fd: int
    st: os.stat_result
    """Its `lstat`; for a directory, the `fstat` of the directory the walk descends into."""

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, stat.S_IFMT(a.st_mode)) == (
        b.st_dev, b.st_ino, stat.S_IFMT(b.st_mode))


class SafeWalk:
    """Iterate over the tree under `root` (not `root` itself), parents before their
    children, names sorted; regular files, directories and symlinks only."""

    def __init__(self, root: Path | str, limits: WalkLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or SNAPSHOT_LIMITS
        self.entries = 0
        self.bytes = 0
        self._deadline = 0.0
        self._device = -1

    def __iter__(self) -> Iterator[Entry]:
        self._deadline = time.monotonic() + self.limits.time_budget
        root_fd = os.open(self.root, DIR_FLAGS)
        try:
            self._device = os.fstat(root_fd).st_dev
            stack = [(root_fd, "", self._listing(root_fd))]
        except BaseException:
            os.close(root_fd)
            raise
        try:
            while stack:
                fd, prefix, listing = stack[-1]
                item = next(listing, None)
                if item is None:
                    stack.pop()
                    os.close(fd)
                    continue
                self._count()
                entry = self._entry(fd, prefix, item)
                if entry is None:
                    continue
                if not entry.is_dir:
                    yield entry
                    continue
                child = self._open_dir(entry)
                if child is None:
                    continue
                try:
                    entry.st = os.fstat(child)
                    if len(stack) >= self.limits.max_depth:
                        raise WalkLimitError(
                            f"{self.root} is more than {self.limits.max_depth} directories "
                            f"deep (at {entry.path})")
                    listing = self._listing(child)
                except BaseException:
                    os.close(child)
                    raise
                stack.append((child, entry.path + "/", listing))
                yield entry
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    def _listing(self, fd: int) -> Iterator[os.DirEntry[str]]:
        """The directory's entries, sorted, read at once: the listing's own descriptor is
        closed before the walk goes deeper."""
        with os.scandir(fd) as entries:
            return iter(sorted(entries, key=lambda e: e.name))

    def _count(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise WalkLimitError(
                f"{self.root} holds more than {self.limits.max_entries} entries")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self._deadline:
            raise WalkLimitError(
                f"walking {self.root} took longer than {self.limits.time_budget:g} s")

    def _entry(self, fd: int, prefix: str, item: os.DirEntry[str]) -> Entry | None:
        path = prefix + item.name
        try:
            st = os.stat(item.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # removed since it was listed
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            return Entry(path, item.name, fd, st)
        return None  # a FIFO, socket or device is no part of a workspace

    def _open_dir(self, entry: Entry) -> int | None:
        opened = self._open_listed(entry, DIR_FLAGS, "directory")
        return None if opened is None else opened[0]

    def open_file(self, entry: Entry) -> tuple[int, os.stat_result] | None:
        """The regular file `entry` open for reading and its `fstat`, its size counted
        against `max_bytes`; None (logged) when it is no longer the file listed."""
        opened = self._open_listed(entry, FILE_FLAGS, "file")
        if opened is not None:
            try:
                self.count_bytes(opened[1].st_size)
            except BaseException:
                os.close(opened[0])
                raise
        return opened

    def _open_listed(self, entry: Entry, flags: int,
                     kind: str) -> tuple[int, os.stat_result] | None:
        """`entry` opened relative to its parent with `flags`, and its `fstat`; None (logged)
        when what the name now holds is not what was listed (swapped, or another mount)."""
        try:
            fd = os.open(entry.name, flags, dir_fd=entry.parent_fd)
        except OSError as exc:
            self._left_out_if_changed(entry, exc)
            return None
        try:
            opened = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if not same_file(opened, entry.st) or opened.st_dev != self._device:
            os.close(fd)
            log.warning("walk of %s: %s is not the %s listed (swapped, or another mount); "
                        "left out", self.root, entry.path, kind)
            return None
        return fd, opened

    def _left_out_if_changed(self, entry: Entry, exc: OSError) -> None:
        """Log `entry` as left out when `exc` says it changed under the walk; re-raise else."""
        if exc.errno not in _CHANGED:
            raise exc
        log.warning("walk of %s: %s changed while walked (%s); left out",
                    self.root, entry.path, exc.strerror)

    def count_bytes(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise WalkLimitError(
                f"{self.root} holds more than {self.limits.max_bytes} bytes of files")

    def read_link(self, entry: Entry) -> str | None:
        """The symlink's text; None (logged) when it is no longer a symlink."""
        try:
            return os.readlink(entry.name, dir_fd=entry.parent_fd)
        except OSError as exc:
            self._left_out_if_changed(entry, exc)
            return None


class FileContent:
    """Exactly `size` bytes of an open file, for `TarFile.addfile`: a file that grew since
    its header was written is cut at `size`; one that shrank is padded with zeros (and
    logged), so the archive stays valid either way."""

    def __init__(self, fd: int, size: int, walk: SafeWalk, path: str) -> None:
        self._fd, self._left, self._walk, self._path = fd, size, walk, path

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        chunks: list[bytes] = []
        wanted = n
        while wanted > 0:
            chunk = os.read(self._fd, wanted)
            if not chunk:
                log.warning("walk of %s: %s shrank while read; padded with zeros",
                            self._walk.root, self._path)
                chunks.append(bytes(wanted))
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        self._left -= n
        if self._left:
            self._walk.check_time()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
