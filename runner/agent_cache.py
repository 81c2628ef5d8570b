"""Agent folders shipped by the gateway, unpacked once per content on the runner's disk.

The gateway sends an agent's folder as a tar with every sandbox it creates (runners
share no disk with it). The runner keys its copy on the archive's content hash, so
a redeployed agent gets a fresh folder and an unchanged one is unpacked only once.

    <root>/<agent name>/v<version>-<sha256 prefix>/
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
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
        staging.rename(target)
    except OSError as exc:
        if not target.is_dir():
            raise BackendError(f"cannot unpack agent into {target}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
