"""Agent folders shipped by the gateway, unpacked once per content on the runner's disk.

The gateway sends an agent's folder as a tar with every sandbox it creates (runners
share no disk with it). The runner keys its copy on the archive's content hash, so
a redeployed agent gets a fresh folder and an unchanged one is unpacked only once.

    <root>/<agent name>/v<version>-<sha256 prefix>/
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

from runner.backend import BackendError
from runner.workspace_state import restore_workspace

_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class AgentCache:
    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    async def folder(self, name: str, version: str, bundle: bytes) -> Path:
        """The unpacked folder of `bundle` (a tar of the agent's folder)."""
        if not _AGENT_NAME.fullmatch(name) or ".." in name:
            raise BackendError(f"invalid agent name: {name!r}")
        digest = hashlib.sha256(bundle).hexdigest()[:24]
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", version)[:32]
        target = self._root / name / f"v{label}-{digest}"
        if not target.is_dir():
            await asyncio.to_thread(_unpack, bundle, target)
        return target


def _unpack(bundle: bytes, target: Path) -> None:
    """Unpack into a staging folder, then rename it into place: readers never see half a
    folder, and of two concurrent unpacks of one bundle the second rename just loses."""
    staging = target.parent / f".staging-{target.name}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        restore_workspace(staging, bundle)
        open_to_sandbox(staging)
        staging.rename(target)
    except OSError as exc:
        if not target.is_dir():
            raise BackendError(f"cannot unpack agent into {target}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_to_sandbox(root: Path) -> None:
    """Give an agent folder's copy the modes the sandbox's user needs to read it.

    The agent runs as an unprivileged host uid that owns none of the folder, so a folder
    deployed from `mktemp -d` (0700) or holding 0600 files would be unreadable in every
    sandbox. Directories become 0755, files 0644, or 0755 when any execute bit was set;
    set-id bits go. Each entry is opened with O_NOFOLLOW and changed through its
    descriptor: a symbolic link is never followed, whatever it points at."""
    _chmod_entry(os.fspath(root), None)
    for _path, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            _chmod_entry(name, dir_fd)


def _chmod_entry(name: str, dir_fd: int | None) -> None:
    if not _is_file_or_dir(os.lstat(name, dir_fd=dir_fd).st_mode):
        return  # a symbolic link (its target is not ours to change), or a special file
    try:
        fd = os.open(name, _NO_FOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return  # swapped for a link since the lstat
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            os.fchmod(fd, 0o755)
        elif stat.S_ISREG(mode):
            os.fchmod(fd, 0o755 if mode & 0o111 else 0o644)
    finally:
        os.close(fd)


def _is_file_or_dir(mode: int) -> bool:
    return stat.S_ISDIR(mode) or stat.S_ISREG(mode)
