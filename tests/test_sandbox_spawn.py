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
    """Seen from the host (the sandbox's own processes cannot look: see the next test)."""
    await backend.create(SID, agent)
    bridge = python_descendant(backend.pid(SID))
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{bridge}/fd"))
    kinds = {os.readlink(f"/proc/{bridge}/fd/{fd}") for fd in fds}
    assert fds[:3] == [0, 1, 2] and any(k.startswith("socket:") for k in kinds), kinds
    assert all(k.startswith(("pipe:", "socket:", "anon_inode:", "/dev/null"))
               for k in kinds), kinds


async def test_no_process_of_the_sandbox_can_reach_the_bridge_socket(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    """The agent's processes share the bridge's uid: the bridge names its socket nowhere,
    lets no child inherit it and is non-dumpable, so its /proc/<pid>/fd is closed to them."""
    await backend.create(SID, agent)
    socket_target = bridge_socket(python_descendant(backend.pid(SID)))
    result = await backend.exec(SID, "echo fd=$ASH_BRIDGE_FD; ls -l /proc/self/fd; "
                                      "ls -l /proc/[0-9]*/fd 2>/dev/null; "
                                      "ls /proc/2/fd; cat /proc/2/environ; "
                                      "grep -c . /proc/2/status >/dev/null && echo status-ok", 30)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert out.startswith("fd=\n"), out
    reachable = [line.rsplit(" ", 1)[-1] for line in out.splitlines() if " -> " in line]
    assert reachable and socket_target not in reachable, (socket_target, reachable)
    assert "cannot open directory '/proc/2/fd': Permission denied" in err, err
    assert "/proc/2/environ: Permission denied" in err, err
    assert "status-ok" in out  # /proc/2 itself is there: only what leads to the socket is shut


def bridge_socket(bridge: int) -> str:
    """`socket:[inode]` of the bridge's socket: the fd its environment named at start (the
    host reads what no process of the sandbox can)."""
    start_env = dict(item.split(b"=", 1) for item in
                     Path(f"/proc/{bridge}/environ").read_bytes().split(b"\0") if b"=" in item)
    return os.readlink(f"/proc/{bridge}/fd/{int(start_env[b'ASH_BRIDGE_FD'])}")


def python_descendant(pid: int) -> int:
    """The first Python process under `pid` (the bridge, under bubblewrap's two)."""
    queue = [pid]
    while queue:
        current = queue.pop(0)
        if "python" in os.path.basename(os.readlink(f"/proc/{current}/exe")):
            return current
        for task in os.listdir(f"/proc/{current}/task"):
            with open(f"/proc/{current}/task/{task}/children") as children:
                queue += [int(child) for child in children.read().split()]
    raise AssertionError(f"no Python process under {pid}")


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
