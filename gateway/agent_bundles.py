"""Deployed agent folders packed for shipping to runners, packed once per deployment.

Runners share no disk with the gateway: every CreateSandbox carries the agent's
folder as a tar. The packed bytes are cached per folder and dropped when the
folder is redeployed (a redeploy renames a fresh copy into place, so its inode
and mtime change) or its version moves.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from runner.backend import AgentSpec, BackendError
from runner.workspace_state import pack_workspace


class AgentBundles:
    def __init__(self) -> None:
        self._packed: dict[str, tuple[tuple[int, int, int], bytes]] = {}

    async def get(self, agent: AgentSpec) -> bytes:
        try:
            stat = os.stat(agent.path)
        except OSError as exc:
            raise BackendError(f"agent folder of {agent.name} is missing: {exc}") from exc
        key = (agent.version, stat.st_ino, stat.st_mtime_ns)
        cached = self._packed.get(agent.path)
        if cached is not None and cached[0] == key:
            return cached[1]
        bundle = await asyncio.to_thread(pack_workspace, Path(agent.path))
        self._packed[agent.path] = (key, bundle)
        return bundle
