"""A session's state on disk: its workspace, packed into a tar and restored from one.

Both run as root on a tree the agent controls. Packing walks the live workspace with
`runner.safe_walk` (by directory descriptors, never following a link, bounded in entries,
bytes, depth and time), so swapping a directory for a symlink mid-walk packs the link, not
the host's files. Restoring writes into an empty directory, regular files and directories
first and symbolic links last, each link made relative to a descriptor of its real parent
directory: no write ever goes through a link, whatever the archive holds.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from runner.backend import BackendError
from runner.safe_walk import DIR_FLAGS, SNAPSHOT_LIMITS, FileContent, SafeWalk, WalkLimits

log = logging.getLogger("ash.runner")

SNAPSHOT_DEADLINE = SNAPSHOT_LIMITS.time_budget + 5.0
"""Seconds a whole snapshot may take: the walk's time budget (it stops itself there), plus
room for mounting the workspace; it also ends the wait for a walk stuck in a system call."""
COPY_BUFFER = 1024 * 1024
"""Bytes read per `read` of a big file (tarfile's default is 16 KiB)."""


def prepare_workspace(workspace: Path, state: bytes | None) -> bool:
    """Make the workspace a bridge will start in; True when it holds earlier state.

    With `state` the workspace is replaced by that snapshot; without it an existing
    workspace is kept (cold resume on this machine) or a fresh one is made.
    """
    if state is not None:
        if workspace.exists():
            shutil.rmtree(workspace)  # fd-based on Linux: avoids_symlink_attacks
        workspace.mkdir(parents=True)
        restore_workspace(workspace, state)
        return True
    if workspace.is_dir():
        return True
    workspace.mkdir(parents=True)
    return False


def pack_workspace(workspace: Path, limits: WalkLimits | None = None) -> bytes:
    """The workspace as a gzip tar, paths relative to it; symlinks stay links, FIFOs,
    sockets and devices are left out. WalkLimitError past any of `limits`.

    Members are built from `lstat`/`fstat` directly: `TarFile.add` looks up each file's user
    and group names, and for the sandbox's uid, which has no passwd entry, that NSS lookup
    was a quarter of the time of a snapshot taken before every `done`."""
    walk = SafeWalk(workspace, limits)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        tar.copybufsize = COPY_BUFFER
        for entry in walk:
            info = tarfile.TarInfo(entry.path)
            if entry.is_file:
                opened = walk.open_file(entry)
                if opened is None:
                    continue
                fd, st = opened
                try:
                    _set_attributes(info, st)
                    info.size = st.st_size
                    tar.addfile(info, FileContent(fd, st.st_size, walk, entry.path))
                finally:
                    os.close(fd)
            elif entry.is_dir:
                _set_attributes(info, entry.st)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                target = walk.read_link(entry)
                if target is None:
                    continue
                _set_attributes(info, entry.st)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
    return buffer.getvalue()


def _set_attributes(info: tarfile.TarInfo, st: os.stat_result) -> None:
    """Whole-second mtimes: a fractional one costs every member an extra (pax) header,
    which was a fifth of the time of a small snapshot."""
    info.mode, info.mtime = st.st_mode & 0o7777, int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid


def is_small(workspace: Path, max_bytes: int = 256 * 1024, max_entries: int = 64) -> bool:
    """Whether the workspace holds at most `max_entries` entries and `max_bytes` of files;
    stops looking as soon as it is not (a large tree costs no full walk)."""
    size = 0
    try:
        for entry in SafeWalk(workspace, WalkLimits(max_entries=max_entries)):
            if entry.is_file:
                size += entry.st.st_size
                if size > max_bytes:
                    return False
    except BackendError:
        return False  # past max_entries, or too deep: not small
    return True


def restore_workspace(workspace: Path, state: bytes, *, every_link: bool = False) -> None:
    """Unpack `state` into the empty directory `workspace`, leaving out what is unsafe (see
    `_data_or_skip`). Symbolic links are made last: while files are written no link exists
    in the tree, so none can redirect a write (tarfile's own check resolves paths with
    `realpath`, which some Python releases let a chain of long links fool).

    `every_link` also makes the links whose target leaves the workspace (a tree only read
    and written link-free, never run in: the gateway's edit of a stored state keeps them,
    so the files API refuses paths through them as on the live workspace)."""
    if any(workspace.iterdir()):
        raise BackendError(f"cannot restore session state into {workspace}: not empty")
    links: list[tarfile.TarInfo] = []

    def files_first(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
        safe = _data_or_skip(member, dest_path)
        if safe is None and every_link and member.issym():
            safe = member
        if safe is not None and safe.issym():
            links.append(safe)
            return None
        if safe is not None and safe.islnk():
            log.warning("restore skipped hard link %r", member.name)
            return None
        return safe

    try:
        with tarfile.open(fileobj=io.BytesIO(state), mode="r:*") as tar:
            tar.extractall(workspace, filter=files_first)
    except tarfile.TarError as exc:
        raise BackendError(f"session state is not a valid tar archive: {exc}") from exc
    for link in links:
        _make_link(workspace, link)


def _make_link(workspace: Path, link: tarfile.TarInfo) -> None:
    """Create `link` under `workspace` through descriptors of its real parent directories;
    a link whose parent is missing, not a directory, or a link itself is left out."""
    parts = PurePosixPath(link.name).parts
    if not parts or ".." in parts or link.name.startswith("/"):
        log.warning("restore skipped link %r", link.name)
        return
    *parents, name = parts
    fd = os.open(workspace, DIR_FLAGS)
    try:
        for part in parents:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        os.symlink(link.linkname, name, dir_fd=fd)
    except OSError as exc:
        log.warning("restore skipped link %r: %s", link.name, exc.strerror)
    finally:
        os.close(fd)


def _data_or_skip(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter, except that an unsafe member (say, a link out of the
    workspace the agent made) is left out instead of failing the whole restore."""
    try:
        return tarfile.data_filter(member, dest_path)
    except tarfile.FilterError:
        log.warning("restore skipped unsafe member %r", member.name)
        return None
