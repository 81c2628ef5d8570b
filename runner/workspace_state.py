"""A session's state on disk: its workspace, packed into a tar and restored from one."""

from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import tarfile
from pathlib import Path

from runner.backend import BackendError

log = logging.getLogger("ash.runner")


def prepare_workspace(workspace: Path, state: bytes | None) -> bool:
    """Make the workspace a bridge will start in; True when it holds earlier state.

    With `state` the workspace is replaced by that snapshot; without it an existing
    workspace is kept (cold resume on this machine) or a fresh one is made.
    """
    if state is not None:
        if workspace.exists():
            shutil.rmtree(workspace)
        workspace.mkdir(parents=True)
        restore_workspace(workspace, state)
        return True
    if workspace.is_dir():
        return True
    workspace.mkdir(parents=True)
    return False


def pack_workspace(workspace: Path) -> bytes:
    """The workspace as a gzip tar, paths relative to it; symlinks stay links.

    Members are built from `lstat` directly: `TarFile.add` looks up each file's user and
    group names, and for the sandbox's uid, which has no passwd entry, that NSS lookup
    was a quarter of the time of a snapshot taken before every `done`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        _add_tree(tar, workspace, "")
    return buffer.getvalue()


def _add_tree(tar: tarfile.TarFile, directory: Path, prefix: str) -> None:
    with os.scandir(directory) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        name = prefix + entry.name
        info = _member(entry, name)
        if info is None:
            continue
        if info.isreg():
            with open(entry.path, "rb") as content:
                tar.addfile(info, content)
        else:
            tar.addfile(info)
        if info.isdir():
            _add_tree(tar, Path(entry.path), name + "/")


def _member(entry: os.DirEntry[str], name: str) -> tarfile.TarInfo | None:
    """The tar header of a regular file, directory or symlink; None for anything else."""
    st = entry.stat(follow_symlinks=False)
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = st.st_mode & 0o7777, st.st_mtime
    info.uid, info.gid = st.st_uid, st.st_gid
    if stat.S_ISREG(st.st_mode):
        info.size = st.st_size
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(entry.path)
    else:
        return None
    return info


def is_small(workspace: Path, max_bytes: int = 256 * 1024, max_entries: int = 64) -> bool:
    """Whether the workspace holds at most `max_entries` entries and `max_bytes` of files;
    stops looking as soon as it is not (a large tree costs no full walk)."""
    entries = size = 0
    pending = [workspace]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                entries += 1
                if entries > max_entries:
                    return False
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    size += entry.stat(follow_symlinks=False).st_size
                    if size > max_bytes:
                        return False
    return True


def restore_workspace(workspace: Path, state: bytes) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(state), mode="r:*") as tar:
            tar.extractall(workspace, filter=_data_or_skip)
    except tarfile.TarError as exc:
        raise BackendError(f"session state is not a valid tar archive: {exc}") from exc


def _data_or_skip(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter, except that an unsafe member (say, a link out of the
    workspace the agent made) is left out instead of failing the whole restore."""
    try:
        return tarfile.data_filter(member, dest_path)
    except tarfile.FilterError:
        log.warning("restore skipped unsafe member %r", member.name)
        return None
