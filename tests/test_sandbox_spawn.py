"""Spawning a sandboxed bridge: what it sees, its output, its descriptors."""

from __future__ import annotations

import asyncio
import os
import site
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runner.backend import AgentSpec
from runner.local import LocalBackend
from runner.sandbox import LOG_CAP, BridgeSettings, LogPump
from tests.runner_fixtures import make_agent

SID = "sess-1"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "data", settings=BridgeSettings())
    yield backend
    await backend.close()


@pytest.fixture
def agent(tmp_path: Path) -> AgentSpec:
    return make_agent(tmp_path)


def populated_site_dirs() -> list[str]:
    return [d for d in site.getsitepackages() if os.path.isdir(d) and os.listdir(d)]


async def shell(backend: LocalBackend, command: str) -> str:
    result = await backend.exec(SID, command, 30)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


async def test_sandbox_mounts_only_the_bridges_packages_and_hides_site_packages(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    assert (await shell(backend, "ls /opt/ash/lib")).split() == ["orjson", "runner", "uvloop",
                                                                "wire"]
    site_dirs = populated_site_dirs()
    assert site_dirs, "the host's site-packages should hold packages"
    for site_dir in site_dirs:
        assert await shell(backend, f"ls -A {site_dir} 2>/dev/null; true") == ""
    etc = (await shell(backend, "ls /etc")).split()
    assert set(etc) <= {"alternatives", "group", "hosts", "ld.so.cache", "localtime",
                        "nsswitch.conf", "passwd"}


async def test_agent_folder_and_home_are_at_their_sandbox_paths(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    output = await shell(backend, "echo $HOME $ASH_AGENT_DIR; pwd; cat /agent/CLAUDE.md; "
                                  "touch /agent/x 2>&1 || echo read-only")
    assert output.startswith("/workspace /agent\n/workspace\n# Tester\n")
    assert output.rstrip().endswith("read-only")


async def test_bridge_keeps_no_descriptor_beyond_stdio_and_its_socket(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    listing = await shell(backend, "ls /proc/2/fd")
    fds = sorted(int(fd) for fd in listing.split())
    bridge_fd = int((await shell(backend, "echo $ASH_BRIDGE_FD")).strip())
    assert fds[:3] == [0, 1, 2] and bridge_fd in fds
    kinds = await shell(backend, "for f in /proc/2/fd/*; do readlink $f; done | sort -u")
    assert all(k.startswith(("pipe:", "socket:", "anon_inode:", "/dev/null"))
               for k in kinds.split()), kinds


async def test_bridge_output_beyond_the_cap_is_dropped(tmp_path: Path) -> None:
    log = tmp_path / "bridge.log"
    pump = LogPump(log)
    writer = os.dup(pump.write_fd)
    pump.start()

    def flood() -> None:
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(b"x" * (LOG_CAP + 512 * 1024))

    await asyncio.to_thread(flood)
    for _ in range(200):
        if pump.read_fd < 0:
            break
        await asyncio.sleep(0.01)
    assert pump.read_fd < 0, "the pump did not reach the end of its pipe"
    data = log.read_bytes()
    assert data.startswith(b"x" * 1000) and LOG_CAP < len(data) < LOG_CAP + 100
    assert data.rstrip().endswith(b"dropped]")
