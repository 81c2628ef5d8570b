"""cgroups: finding the hierarchy, applying limits (v2 on a fake tree, the real one here),
joining before anything runs, noticing limit hits, reaping what dead runners left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import cgroups
from runner.cgroups import (
    CgroupUnavailable,
    CgroupV1,
    CgroupV2,
    V1Cgroup,
    V2Cgroup,
    detect,
    process_start_time,
)
from runner.isolation import JOIN_CGROUPS
from runner.limit_watch import LimitWatcher
from runner.limits import SandboxLimits

LIMITS = SandboxLimits(memory_mb=64, pids=16, cpus=0.5)


def mountinfo(*lines: str) -> str:
    return "\n".join(f"{n} 1 0:{n} / {line}" for n, line in enumerate(lines, 30)) + "\n"


def fake_v2_root(root: Path, controllers: str = "cpuset cpu io memory hugetlb pids") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


# finding the hierarchy


def test_detect_prefers_cgroup2_with_memory_pids_and_cpu(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path / "unified")
    tree = detect(mountinfo(f"{root} rw,nosuid - cgroup2 cgroup2 rw"))
    assert isinstance(tree, CgroupV2) and tree.root == root


def test_detect_uses_v1_when_the_unified_hierarchy_lacks_controllers(tmp_path: Path) -> None:
    hybrid = fake_v2_root(tmp_path / "unified", controllers="hugetlb")
    tree = detect(mountinfo(
        f"{hybrid} rw - cgroup2 cgroup2 rw",
        "/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
        "/sys/fs/cgroup/pids rw - cgroup cgroup rw,pids",
        "/sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
    ))
    assert isinstance(tree, CgroupV1)
    assert tree.mounts == {"memory": Path("/sys/fs/cgroup/memory"),
                           "pids": Path("/sys/fs/cgroup/pids"),
                           "cpu": Path("/sys/fs/cgroup/cpu,cpuacct")}


def test_detect_refuses_without_a_usable_hierarchy_and_says_what_to_do(tmp_path: Path) -> None:
    hybrid = fake_v2_root(tmp_path / "unified", controllers="hugetlb")
    with pytest.raises(CgroupUnavailable) as refused:
        detect(mountinfo(f"{hybrid} rw - cgroup2 cgroup2 rw",
                         "/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"))
    message = str(refused.value)
    assert "memory, pids and cpu" in message and "--sandbox=none" in message
    assert f"{hybrid} (hugetlb)" in message


# cgroup v2 (a fake tree: what our code writes)


def test_v2_runner_group_enables_the_controllers_top_down(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path)
    tree = CgroupV2(root, name="1.2.3")
    tree.open()
    for directory in (root, root / "ash", root / "ash" / "1.2.3"):
        assert (directory / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_limits_are_memory_without_swap_killed_whole_pids_and_cpu(tmp_path: Path) -> None:
    (tmp_path / "memory.swap.max").write_text("max\n")
    CgroupV2.apply_limits(tmp_path, LIMITS)
    written = {name: (tmp_path / name).read_text() for name in (
        "memory.max", "memory.swap.max", "memory.oom.group", "pids.max", "cpu.max")}
    assert written == {"memory.max": str(64 * 2**20), "memory.swap.max": "0",
                       "memory.oom.group": "1", "pids.max": "16", "cpu.max": "50000 100000"}


def test_v2_counters_read_oom_kills_and_pids_limit_hits(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n")
    (tmp_path / "pids.events").write_text("max 3\n")
    counters = V2Cgroup("s", (tmp_path,)).counters()
    assert (counters.oom_kills, counters.pids_max_hits) == (1, 3)


def test_v2_kill_uses_cgroup_kill(tmp_path: Path) -> None:
    (tmp_path / "cgroup.kill").write_text("")
    V2Cgroup("s", (tmp_path,)).kill()
    assert (tmp_path / "cgroup.kill").read_text() == "1"


def test_reap_removes_groups_of_dead_runners_only(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path)
    dead_pid = int(subprocess.run(["sh", "-c", "echo $$"], capture_output=True,
                                  text=True, check=True).stdout)
    dead = root / "ash" / f"{dead_pid}.1.1"
    (dead / "session-a").mkdir(parents=True)
    alive = root / "ash" / f"{os.getpid()}.{process_start_time(os.getpid())}.9"
    (alive / "session-b").mkdir(parents=True)
    foreign = root / "ash" / "not-ours"
    foreign.mkdir()
    assert CgroupV2(root).reap_stale() == 1
    assert not dead.exists() and (alive / "session-b").is_dir() and foreign.is_dir()


# the real hierarchy of this host


@pytest.fixture
def real_tree() -> object:
    tree = detect()
    tree.open()
    yield tree
    tree.close()


def test_real_hierarchy_applies_limits_to_a_sandbox_group(real_tree: cgroups.CgroupTree) -> None:
    group = real_tree.create("limits", LIMITS)
    try:
        if isinstance(group, V1Cgroup):
            memory, pids, cpu = (real_tree.mounts[c] / "ash" / real_tree.name / "limits"
                                 for c in cgroups.CONTROLLERS)
            assert int((memory / "memory.limit_in_bytes").read_text()) == 64 * 2**20
            if (memory / "memory.memsw.limit_in_bytes").exists():
                assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == 64 * 2**20
            assert (pids / "pids.max").read_text().strip() == "16"
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert group.event_fd() is not None
        else:
            directory = group.dirs[0]
            assert (directory / "memory.max").read_text().strip() == str(64 * 2**20)
            assert (directory / "pids.max").read_text().strip() == "16"
            assert (directory / "cpu.max").read_text().split() == ["50000", "100000"]
    finally:
        assert group.try_remove()
    assert not any(d.exists() for d in group.dirs)


def test_first_process_joins_its_group_before_it_executes_anything(
    real_tree: cgroups.CgroupTree,
) -> None:
    group = real_tree.create("join", LIMITS)
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", JOIN_CGROUPS, "ash-sandbox", *map(str, group.procs_files), "--",
             "cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True)
        paths = {}
        for line in result.stdout.splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else ["unified"]:
                paths[controller] = path
        expected = f"/ash/{real_tree.name}/join"
        wanted = cgroups.CONTROLLERS if real_tree.version == 1 else ("unified",)
        assert all(paths[c] == expected for c in wanted), result.stdout
    finally:
        group.kill()
        assert group.try_remove()


def test_join_failure_stops_before_the_command_runs(real_tree: cgroups.CgroupTree,
                                                    tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = subprocess.run(
        ["/bin/sh", "-c", JOIN_CGROUPS, "ash-sandbox", "/nonexistent/cgroup.procs", "--",
         "touch", str(marker)], capture_output=True, text=True, check=False)
    assert result.returncode == 125 and "cannot join cgroup" in result.stderr
    assert not marker.exists()


def test_start_reaps_a_dead_runners_groups_and_kills_what_is_left_in_them() -> None:
    dead_pid = int(subprocess.run(["sh", "-c", "echo $$"], capture_output=True,
                                  text=True, check=True).stdout)
    dead = detect(name=f"{dead_pid}.1.1")
    dead.open()
    orphan_group = dead.create("orphan", LIMITS)
    orphan = subprocess.Popen(["/bin/sh", "-c", JOIN_CGROUPS, "ash-sandbox",
                               *map(str, orphan_group.procs_files), "--", "sleep", "60"])
    try:
        for _ in range(100):
            if orphan.pid in orphan_group.pids():
                break
            time.sleep(0.01)
        assert orphan.pid in orphan_group.pids()
        assert detect().reap_stale() >= 1
        assert orphan.wait(5) == -signal.SIGKILL
        assert not any(d.exists() for d in dead.runner_dirs)
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
        dead.close()


def test_runner_close_removes_its_group(real_tree: cgroups.CgroupTree) -> None:
    real_tree.create("left-behind", LIMITS)
    real_tree.close()
    assert not any(d.exists() for d in real_tree.runner_dirs)


# noticing limit hits


@contextlib.contextmanager
def watching(group: cgroups.SandboxCgroup, watcher: LimitWatcher) -> Iterator[asyncio.Event]:
    """`group` watched; the event is set when the watcher reports a hit."""
    hit = asyncio.Event()
    watcher.watch(group, hit.set)
    try:
        yield hit
    finally:
        watcher.close()


async def test_watcher_notices_a_v2_oom_kill_through_inotify(tmp_path: Path) -> None:
    for name in ("memory.events", "pids.events"):
        (tmp_path / name).write_text("oom_kill 0\n" if name == "memory.events" else "max 0\n")
    with watching(V2Cgroup("s", (tmp_path,)), LimitWatcher()) as hit:
        (tmp_path / "memory.events").write_text("oom_kill 0\n")
        await asyncio.sleep(0.05)
        assert not hit.is_set()
        (tmp_path / "memory.events").write_text("oom 1\noom_kill 1\n")
        async with asyncio.timeout(2):
            await hit.wait()


async def test_watcher_polls_v1_pids_limit_hits(tmp_path: Path) -> None:
    (tmp_path / "memory.oom_control").write_text("oom_kill 0\n")
    (tmp_path / "pids.events").write_text("max 0\n")
    group = V1Cgroup("s", (tmp_path,), tmp_path, tmp_path, None)
    with watching(group, LimitWatcher(poll_interval=0.02)) as hit:
        await asyncio.sleep(0.1)
        assert not hit.is_set()
        (tmp_path / "pids.events").write_text("max 1\n")
        async with asyncio.timeout(2):
            await hit.wait()
