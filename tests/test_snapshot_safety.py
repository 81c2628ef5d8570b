"""Host-side walks of a workspace cannot be redirected out of it (issue 11, finding 1).

The runner (root, host namespaces) packs a live workspace while the agent's processes keep
running. The agent must not be able to point that walk anywhere else: not by swapping a
directory or a file for a symlink mid-walk, not with a FIFO, not with a tree too big or too
deep to pack; and a crafted state must not make a restore write outside its workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from runner import local, workspace_state
from runner.backend import AgentSpec, BackendError
from runner.isolation import create_isolation
from runner.local import LocalBackend
from runner.safe_walk import MAX_BYTES, Entry, SafeWalk, WalkLimitError, WalkLimits
from runner.sandbox import BridgeSettings
from runner.workspace_state import is_small, pack_workspace, restore_workspace
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
for i, target in enumerate([canary_dir, "/etc", "/"]):
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
"""Run by the agent in its sandbox: swap `d` for a symlink to the canary's directory, to the
host's /etc or to its / (as the runner, in the host's namespaces, resolves them) and back,
and `f` for one to the canary file, atomically (renameat2 RENAME_EXCHANGE), as fast as it
can."""

RACE_NAMES = {"d", "d/inside.txt", "f", "fl", "l0", "l0/inside.txt", "l1", "l1/inside.txt",
              "l2", "l2/inside.txt", "race.py", "ready"}
"""Everything the race may legitimately leave in a snapshot: `d` is packed under whichever
name it has at the moment (`d`, `l0`, `l1` or `l2`), and never anything through a link."""


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


@contextlib.contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Fail with TimeoutError, rather than hang, if the block blocks for `seconds`."""
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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

    kinds: Counter[str] = Counter()
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
            if name in {"d", "l0", "l1", "l2"}:
                kinds["dir" if member.isdir() else "link"] += 1
        await asyncio.sleep(0)
    print(f"{SNAPSHOTS} snapshots during the race: the swapped directory packed "
          f"{kinds['dir']} times as a directory, {kinds['link']} as a link")
    assert set(kinds) == {"dir", "link"}, "the race never caught `d` in both states"
    assert not failed, f"{len(failed)} snapshots failed, the first: {failed[0]}"


async def test_a_sparse_terabyte_file_fails_the_snapshot_at_once_with_a_clear_error(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    made = await backend.exec(SID, "truncate -s 1T huge.bin && echo kept > small.txt", 30)
    assert made.exit_code == 0, made.stderr
    started = time.monotonic()
    with pytest.raises(WalkLimitError, match=f"more than {MAX_BYTES} bytes of files"):
        await backend.snapshot(SID)
    assert time.monotonic() - started < 2


async def test_a_snapshot_stuck_past_its_deadline_fails_with_a_clear_error(
    backend: LocalBackend, agent: AgentSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk stuck where its own budget cannot see it (a system call that does not
    return): the snapshot's deadline still ends the wait."""
    await backend.create(SID, agent)
    made = await backend.exec(SID, "head -c 300000 /dev/urandom > big.bin", 30)
    assert made.exit_code == 0, made.stderr
    monkeypatch.setattr(local, "SNAPSHOT_DEADLINE", 0.2)
    monkeypatch.setattr(local, "pack_workspace", lambda workspace: time.sleep(1) or b"")
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"snapshot of session racer took longer than 0\.2 s"):
        await backend.snapshot(SID)
    assert time.monotonic() - started < 0.9


# The walker, driven directly: each swap happens exactly in the window it targets.


def outside_dir(tmp_path: Path) -> Path:
    """A host directory beside the workspace, with a secret in it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"host secret")
    return outside


def make_workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    (workspace / "d").mkdir(parents=True)
    (workspace / "d" / "inside.txt").write_text("mine")
    (workspace / "f").write_bytes(b"x" * 64)
    (workspace / "z.txt").write_text("last")
    return workspace


def test_a_symlink_to_a_directory_is_stored_as_a_link_not_walked(tmp_path: Path) -> None:
    outside = outside_dir(tmp_path)
    workspace = make_workspace(tmp_path)
    (workspace / "root").symlink_to("/")
    (workspace / "out").symlink_to(outside)
    packed = members(pack_workspace(workspace))
    assert packed["root"][0].issym() and packed["root"][0].linkname == "/"
    assert packed["out"][0].issym() and packed["out"][0].linkname == str(outside)
    assert not [name for name in packed if name.startswith(("root/", "out/"))]


def test_a_fifo_is_left_out_without_blocking(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    os.mkfifo(workspace / "pipe")
    with alarm(5):
        packed = members(pack_workspace(workspace))
    assert "pipe" not in packed and packed["z.txt"][1] == b"last"


class SwapBeforeOpen(SafeWalk):
    """Replaces `f` by what `swap` makes of it between its listing and its opening."""

    swap: Callable[[Path], None] = staticmethod(lambda path: None)

    def open_file(self, entry: Entry) -> tuple[int, os.stat_result] | None:
        if entry.name == "f":
            self.swap(self.root / entry.path)
        return super().open_file(entry)


def pack_with_swap(monkeypatch: pytest.MonkeyPatch, workspace: Path,
                   swap: Callable[[Path], None]) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    walker = type("Walker", (SwapBeforeOpen,), {"swap": staticmethod(swap)})
    monkeypatch.setattr(workspace_state, "SafeWalk", walker)
    with alarm(5):
        return members(pack_workspace(workspace))


def replace_by_link(target: Path) -> Callable[[Path], None]:
    def swap(path: Path) -> None:
        path.unlink()
        path.symlink_to(target)
    return swap


def replace_by_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def replace_by_another_file(path: Path) -> None:
    other = path.with_name("other")
    other.write_bytes(b"y" * 64)
    other.replace(path)


@pytest.mark.parametrize("swap", ["link", "fifo", "other file"])
def test_a_file_replaced_between_listing_and_opening_is_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, swap: str
) -> None:
    outside = outside_dir(tmp_path)
    workspace = make_workspace(tmp_path)
    swaps = {"link": replace_by_link(outside / "secret.txt"), "fifo": replace_by_fifo,
             "other file": replace_by_another_file}
    packed = pack_with_swap(monkeypatch, workspace, swaps[swap])
    assert "f" not in packed
    assert packed["d/inside.txt"][1] == b"mine" and packed["z.txt"][1] == b"last"
    assert not [name for name, (_, data) in packed.items() if b"host secret" in data]


class SwapBeforeDescent(SafeWalk):
    """Replaces the directory `d` by a symlink to `target` between its `lstat` and the walk
    opening it."""

    target = Path("/")

    def _entry(self, fd: int, prefix: str, item: os.DirEntry[str]) -> Entry | None:
        entry = super()._entry(fd, prefix, item)
        if entry is not None and entry.path == "d":
            directory = self.root / "d"
            directory.rename(self.root / "d.moved")
            directory.symlink_to(self.target)
        return entry


def test_a_directory_replaced_by_a_link_before_its_descent_is_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outside = outside_dir(tmp_path)
    workspace = make_workspace(tmp_path)
    walker = type("Walker", (SwapBeforeDescent,), {"target": outside})
    monkeypatch.setattr(workspace_state, "SafeWalk", walker)
    packed = members(pack_workspace(workspace))
    assert "d" not in packed and "secret.txt" not in {Path(n).name for n in packed}
    assert packed["z.txt"][1] == b"last"


def test_a_mount_inside_the_workspace_is_not_walked(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    mounted = workspace / "mnt"
    mounted.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mounted)], check=True)
    try:
        (mounted / "other-device.txt").write_text("not the workspace's")
        packed = members(pack_workspace(workspace))
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
    assert "mnt" not in packed and "mnt/other-device.txt" not in packed
    assert packed["d/inside.txt"][1] == b"mine"


def test_a_file_mounted_into_the_workspace_is_not_read(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workspace / "mounted.txt").write_text("covered")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(elsewhere)], check=True)
    try:
        (elsewhere / "host.txt").write_text("another filesystem's file")
        subprocess.run(["mount", "--bind", str(elsewhere / "host.txt"),
                        str(workspace / "mounted.txt")], check=True)
        try:
            packed = members(pack_workspace(workspace))
        finally:
            subprocess.run(["umount", str(workspace / "mounted.txt")], check=True)
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)
    assert "mounted.txt" not in packed and packed["z.txt"][1] == b"last"


class ResizeAfterOpen(SafeWalk):
    """Changes `f`'s size once it is open, before its content is read."""

    new_size = 0

    def open_file(self, entry: Entry) -> tuple[int, os.stat_result] | None:
        opened = super().open_file(entry)
        if entry.name == "f":
            os.truncate(self.root / "f", self.new_size)
        return opened


@pytest.mark.parametrize(("new_size", "expected"), [(16, b"x" * 16 + bytes(48)),
                                                   (4096, b"x" * 64)],
                         ids=["shrunk: padded", "grown: cut"])
def test_a_file_resized_while_packed_keeps_its_header_size_and_the_tar_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, new_size: int, expected: bytes
) -> None:
    workspace = make_workspace(tmp_path)
    monkeypatch.setattr(workspace_state, "SafeWalk",
                        type("Walker", (ResizeAfterOpen,), {"new_size": new_size}))
    packed = members(pack_workspace(workspace))
    assert packed["f"][0].size == 64 and packed["f"][1] == expected
    assert packed["z.txt"][1] == b"last"


def test_too_many_entries_fail_with_a_clear_error(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    for i in range(10):
        (workspace / f"n{i}").write_text("")
    with pytest.raises(WalkLimitError, match="holds more than 8 entries"):
        pack_workspace(workspace, WalkLimits(max_entries=8))


def test_too_many_bytes_fail_with_a_clear_error(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    with pytest.raises(WalkLimitError, match="more than 50 bytes of files"):
        pack_workspace(workspace, WalkLimits(max_bytes=50))


def test_a_tree_too_deep_fails_with_a_clear_error(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    (workspace / "/".join(["deep"] * 10)).mkdir(parents=True)
    with pytest.raises(WalkLimitError, match="more than 5 directories deep"):
        pack_workspace(workspace, WalkLimits(max_depth=5))


def test_a_pack_past_its_time_budget_fails_with_a_clear_error(tmp_path: Path) -> None:
    """The budget holds inside a file too: a big one is not read to its end first."""
    workspace = make_workspace(tmp_path)
    (workspace / "big.bin").touch()
    os.truncate(workspace / "big.bin", 1 << 30)
    started = time.monotonic()
    with pytest.raises(WalkLimitError, match=r"took longer than 0\.05 s"):
        pack_workspace(workspace, WalkLimits(time_budget=0.05))
    assert time.monotonic() - started < 1


def test_a_walk_stopped_early_or_failed_leaves_no_descriptor_open(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    (workspace / "/".join(["deep"] * 10)).mkdir(parents=True)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert not is_small(workspace, max_entries=3)
        with pytest.raises(WalkLimitError):
            pack_workspace(workspace, WalkLimits(max_depth=5))
        with pytest.raises(WalkLimitError):
            pack_workspace(workspace, WalkLimits(max_bytes=10))
    assert len(os.listdir("/proc/self/fd")) == before


def test_limits_come_from_the_environment_and_bad_values_are_refused() -> None:
    limits = WalkLimits.from_env({"ASH_SNAPSHOT_MAX_ENTRIES": "7",
                                  "ASH_SNAPSHOT_TIME_BUDGET": "2.5"})
    assert limits == WalkLimits(max_entries=7, time_budget=2.5)
    with pytest.raises(ValueError, match="ASH_SNAPSHOT_MAX_BYTES must be a positive number"):
        WalkLimits.from_env({"ASH_SNAPSHOT_MAX_BYTES": "-1"})


# Restore: the archive is the agent's (it packed its own workspace), so it is hostile too.


def tar_of(*entries: tuple[str, bytes | None, str]) -> bytes:
    """An uncompressed tar of (name, file content or None, symlink target) entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, target in entries:
            member = tarfile.TarInfo(name)
            if target:
                member.type, member.linkname = tarfile.SYMTYPE, target
            elif content is None:
                member.type, member.mode = tarfile.DIRTYPE, 0o755
            else:
                member.size = len(content)
            tar.addfile(member, io.BytesIO(content) if content else None)
    return buffer.getvalue()


def test_restore_writes_nothing_through_a_link_member_to_outside(tmp_path: Path) -> None:
    outside = outside_dir(tmp_path)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    restore_workspace(workspace, tar_of(("esc", None, str(outside)),
                                        ("esc/pwned.txt", b"through the link", ""),
                                        ("up", None, ".."),
                                        ("up/pwned.txt", b"through the link", "")))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (tmp_path / "pwned.txt").exists()


def test_restore_writes_nothing_outside_through_links_that_defeat_realpath(
    tmp_path: Path
) -> None:
    """CVE-2025-4517: links whose expansion passes PATH_MAX stop `os.path.realpath`, so
    tarfile's `data` filter (before Python 3.11.13 / 3.12.11 / 3.13.4) passes a link out
    of the destination, and a file written through it."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    steps = "abcdefghijklmnop"
    max_path = os.pathconf(tmp_path, "PC_PATH_MAX")
    component = "d" * ((max_path - len(str(workspace)) - 1) // (len(steps) + 1))
    entries: list[tuple[str, bytes | None, str]] = []
    path = ""
    for step in steps:
        entries += [(os.path.join(path, component), None, ""),
                    (os.path.join(path, step), None, component)]
        path = os.path.join(path, component)
    long_link = os.path.join(*steps, "l" * 254)
    entries += [(long_link, None, os.path.join(*[".."] * len(steps))),
                ("escape", None, os.path.join(long_link, "..")),
                ("escape/newfile", b"written outside", "")]
    restore_workspace(workspace, tar_of(*entries))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workspace"]


def test_restore_refuses_a_workspace_that_is_not_empty(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    with pytest.raises(BackendError, match="not empty"):
        restore_workspace(workspace, tar_of(("a.txt", b"a", "")))


def test_a_restored_link_is_made_and_files_beside_it_kept(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    restore_workspace(workspace, tar_of(("notes", None, ""), ("notes/a.txt", b"alpha", ""),
                                        ("notes/link", None, "a.txt"), ("top", None, "notes")))
    assert os.readlink(workspace / "notes" / "link") == "a.txt"
    assert (workspace / "top" / "a.txt").read_bytes() == b"alpha"
