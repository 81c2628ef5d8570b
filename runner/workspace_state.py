"""A session's state on disk: its workspace, packed into a tar and restored from one."""

from __future__ import annotations

import io
import logging
import shutil
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
    """The workspace as a gzip tar, paths relative to it; symlinks stay links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for entry in sorted(workspace.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


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
