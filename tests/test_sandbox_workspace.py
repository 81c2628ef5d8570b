"""A sandbox's workspace: its own size-limited disk, kept across restarts (cold resume),
removed with its session; an agent's limits reach its cgroup."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from runner.workspace_disk import WorkspaceDisks
from runner.workspace_state import is_small, pack_workspace, restore_workspace
from tests.conftest import make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import (
    bridge_host_pid,
    cgroup_dir,
    loop_devices_backed_by,
    new_session,
    run,
    running_gateway,
)
from tests.sse_client import assistant_text


def test_workspace_survives_a_gateway_restart(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "data") as first, make_client(first) as client:
        sid = new_session(client, tmp_path, "keeper")
        assert run(client, sid, "echo kept > notes.txt")["exitCode"] == 0
        send_message(client, sid, "remember plums")
    with running_gateway(tmp_path / "data") as second, make_client(second) as client:
        assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
        assert run(client, sid, "cat notes.txt")["stdout"] == "kept\n"
        reply = send_message(client, sid, "what fruit?")
        assert "Earlier you said: remember plums." in assistant_text(reply)


def test_a_killed_gateway_leaves_no_workspace_mounted(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data").start()
    with make_client(gateway) as client:
        sid = new_session(client, tmp_path, "crasher")
        run(client, sid, "echo safe > kept.txt")
    image = tmp_path / "data" / "sandboxes" / sid / "workspace.img"
    assert loop_devices_backed_by(image)
    gateway.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while loop_devices_backed_by(image):
        assert time.monotonic() < deadline, "the workspace stayed mounted after the gateway died"
        time.sleep(0.05)
    with running_gateway(tmp_path / "data") as again, make_client(again) as client:
        assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
        assert run(client, sid, "cat kept.txt")["stdout"] == "safe\n"


def test_workspace_is_a_disk_of_the_agents_size(client, tmp_path: Path) -> None:
    sid = new_session(client, tmp_path, "small", {"limits": {"disk_mb": 64}})
    size_kib = int(run(client, sid, "df -k --output=size /workspace | tail -1")["stdout"])
    assert 48 * 1024 < size_kib <= 64 * 1024
    listing = run(client, sid, "ls -a /workspace")["stdout"].split()
    assert "lost+found" not in listing


def test_agent_limits_reach_its_cgroup(client, tmp_path: Path) -> None:
    sid = new_session(client, tmp_path, "limited",
                      {"limits": {"memory_mb": 200, "pids": 20, "cpus": 0.5}})
    pid = bridge_host_pid(sid)
    pids = cgroup_dir(pid, "pids")
    assert (pids / "pids.max").read_text().strip() == "20"
    memory = cgroup_dir(pid, "memory")
    limit_file = "memory.limit_in_bytes" if (memory / "memory.limit_in_bytes").exists() \
        else "memory.max"
    assert int((memory / limit_file).read_text()) == 200 * 2**20
    cpu = cgroup_dir(pid, "cpu")
    quota = (cpu / "cpu.cfs_quota_us") if (cpu / "cpu.cfs_quota_us").exists() else cpu / "cpu.max"
    assert quota.read_text().split()[0] == "50000"


def test_ending_a_session_removes_its_cgroup_and_disk(gateway, client, tmp_path: Path) -> None:
    sid = new_session(client, tmp_path, "ephemeral")
    groups = [cgroup_dir(bridge_host_pid(sid), c) for c in ("memory", "pids", "cpu")]
    assert all(group.is_dir() for group in groups)
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert not any(group.exists() for group in groups)
    assert not (gateway.data_dir / "sandboxes" / sid).exists()


def test_deploy_refuses_bad_limits(client, tmp_path: Path) -> None:
    folder = make_agent_folder(tmp_path, "greedy", {"limits": {"memory_mb": "lots"}})
    response = client.post("/api/agents", json={"name": "greedy", "path": str(folder)})
    assert response.status_code == 400
    assert "limits.memory_mb" in response.json()["error"]


def test_a_workspace_made_without_sandbox_moves_onto_a_disk(tmp_path: Path) -> None:
    none = ["--sandbox", "none"]
    with running_gateway(tmp_path / "data", extra_args=none) as plain, \
            make_client(plain) as client:
        sid = new_session(client, tmp_path, "migrant")
        assert run(client, sid, "echo moved > notes.txt")["exitCode"] == 0
    with running_gateway(tmp_path / "data") as sandboxed, make_client(sandboxed) as client:
        assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
        assert run(client, sid, "cat notes.txt; id -u")["stdout"] == "moved\n1000\n"
        assert run(client, sid, "echo more >> notes.txt")["exitCode"] == 0
    assert (tmp_path / "data" / "sandboxes" / sid / "workspace.img").is_file()


def test_a_mounted_workspace_is_shared_by_counting_without_a_thread(tmp_path: Path) -> None:
    disks = WorkspaceDisks(tmp_path / "sandboxes", (os.getuid(), os.getgid()))
    sandbox_dir = tmp_path / "sandboxes" / "s1"
    assert not disks.retain(sandbox_dir), "nothing is mounted yet"
    disks.attach(sandbox_dir, 16)
    try:
        assert disks.retain(sandbox_dir)
        assert disks.release(sandbox_dir), "a user that is not the last leaves at once"
        assert not disks.release(sandbox_dir), "the last user's detach unmounts"
        assert os.path.ismount(disks.workspace(sandbox_dir))
    finally:
        disks.detach(sandbox_dir)
    assert not os.path.ismount(disks.workspace(sandbox_dir))


def test_a_workspace_is_small_until_it_holds_too_many_bytes_or_entries(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_bytes(b"x" * 100)
    assert is_small(tmp_path, max_bytes=1000, max_entries=10)
    (tmp_path / "notes" / "big.bin").write_bytes(b"x" * 2000)
    assert not is_small(tmp_path, max_bytes=1000, max_entries=10)
    assert not is_small(tmp_path, max_bytes=10_000, max_entries=2)


def test_a_packed_workspace_restores_files_directories_and_links(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "notes" / "deeper").mkdir(parents=True)
    (source / "notes" / "deeper" / "a.txt").write_text("alpha")
    (source / "run.sh").write_text("echo hi")
    (source / "run.sh").chmod(0o755)
    (source / "link").symlink_to("notes/deeper/a.txt")
    os.mkfifo(source / "pipe")
    target = tmp_path / "target"
    target.mkdir()
    restore_workspace(target, pack_workspace(source))
    assert (target / "notes" / "deeper" / "a.txt").read_text() == "alpha"
    assert (target / "run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(target / "link") == "notes/deeper/a.txt"
    assert not (target / "pipe").exists(), "a fifo is not part of a workspace's state"
