"""Host-side walks of a workspace cannot be redirected out of it (issue 11, finding 1).

The runner (root, host namespaces) packs a live workspace while the agent's processes keep
running. The agent must not be able to point that walk anywhere else: not by swapping a
directory or a file for a symlink mid-walk, not with a FIFO, not with a tree too big or too
deep to pack; and a crafted state must not make a restore write outside its workspace.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.backend import AgentSpec, BackendError
from runner.isolation import create_isolation
from runner.local import LocalBackend
from runner.sandbox import BridgeSettings
from tests.runner_fixtures import make_agent
from tests.sandbox_helpers import PYTHON

SID = "racer"
SNAPSHOTS = 250

RACE = """
import ctypes, os, sys, time
os.closerange(3, 1024)  # the exec's output pipes, duplicated: its reply waits for their EOF
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2

def exchange(a, b):
    libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)

canary_dir, canary_file, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs("d", exist_ok=True)
with open("d/inside.txt", "w") as f:
    f.write("mine")
with open("f", "wb") as f:
    f.write(b"x" * size)
pairs = []
for i, target in enumerate([canary_dir, "/etc"]):
    os.symlink(target, f"l{i}")
    pairs.append((b"d", f"l{i}".encode()))
os.symlink(canary_file, "fl")
pairs.append((b"f", b"fl"))
open("ready", "w").close()
end = time.monotonic() + 60
while time.monotonic() < end:
    for a, b in pairs:
        exchange(a, b)
        exchange(a, b)
"""
"""Run by the agent in its sandbox: swap `d` for a symlink to the canary's directory or to
the host's /etc (as the runner sees them) and back, and `f` for one to the canary file,
atomically (renameat2 RENAME_EXCHANGE), as fast as it can."""

RACE_NAMES = {"d", "d/inside.txt", "f", "fl", "l0", "l0/inside.txt", "l1", "l1/inside.txt",
              "race.py", "ready"}
"""Everything the race may legitimately leave in a snapshot: `d` is packed under whichever
name it has at the moment (`d`, `l0` or `l1`), and never anything through a link."""


@dataclass(frozen=True)
class Canary:
    secret: Path
    """A root-only host file outside every workspace."""
    marker: bytes
    """Its content, unique to this test run."""
    shadow: bytes
    """The first line of the host's /etc/shadow, which no workspace holds either."""


@pytest.fixture
def canary() -> Iterator[Canary]:
    directory = Path(tempfile.mkdtemp(prefix="ash-canary-", dir="/root"))
    marker = f"ASH-CANARY-{secrets.token_hex(16)}".encode()
    secret = directory / "secret.txt"
    secret.write_bytes(marker)
    secret.chmod(0o600)
    try:
        yield Canary(secret, marker, Path("/etc/shadow").read_bytes().splitlines()[0])
    finally:
        shutil.rmtree(directory)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    data_dir = tmp_path / "data"
    backend = LocalBackend(data_dir, settings=BridgeSettings(),
                           isolation=create_isolation("bwrap", data_dir))
    yield backend
    await backend.close()


@pytest.fixture
def agent(tmp_path: Path) -> AgentSpec:
    return make_agent(tmp_path)


def members(state: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(state), mode="r:gz") as tar:
        found = {}
        for member in tar.getmembers():
            content = tar.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            found[member.name] = (member, content)
        return found


async def test_swapping_workspace_entries_for_host_symlinks_leaks_nothing_into_snapshots(
    backend: LocalBackend, agent: AgentSpec, canary: Canary
) -> None:
    secret, marker, shadow = canary.secret, canary.marker, canary.shadow
    await backend.create(SID, agent)
    baseline = set(members(await backend.snapshot(SID)))
    workspace = Path(backend.workspace(SID))
    (workspace / "race.py").write_text(RACE)
    started = await backend.exec(SID, (
        f"setsid {PYTHON} race.py {secret.parent} {secret} {len(marker)} "
        "</dev/null >/dev/null 2>&1 & "
        "for i in $(seq 100); do [ -e ready ] && exit 0; sleep 0.05; done; exit 1"), 30)
    assert started.exit_code == 0, started.stderr

    kinds: set[str] = set()
    failed: list[str] = []
    for _ in range(SNAPSHOTS):
        try:
            state = await backend.snapshot(SID)
        except BackendError as exc:
            failed.append(str(exc))
            continue
        packed = members(state)
        unexpected = set(packed) - baseline - RACE_NAMES
        assert not unexpected, f"host entries in the snapshot: {sorted(unexpected)[:10]}"
        for name, (member, content) in packed.items():
            assert marker not in content and shadow not in content, f"host bytes in {name}"
            if name in {"d", "l0", "l1"}:
                kinds.add("dir" if member.isdir() else "link")
        await asyncio.sleep(0)
    assert kinds == {"dir", "link"}, "the race never caught `d` in both states"
    assert not failed, f"{len(failed)} snapshots failed, the first: {failed[0]}"
