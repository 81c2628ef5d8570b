"""The isolation suite, part 1: a hostile agent cannot see or touch anything outside its session.

Every attack runs through a real gateway (default sandbox: bubblewrap + cgroups) as the
agent would run it — a shell command in its sandbox (`POST /exec`) — and each test
first checks that what it attacks is really there on the host, so it cannot pass by
accident.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import httpx
import pytest

import runner
from tests.conftest import send_message
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import (
    PYTHON,
    bridge_host_pid,
    module_gateway,
    new_session,
    python,
    run,
)

SECRET = "hunter2-do-not-leak"


gateway, client = module_gateway("isolation", extra_env={"SUPER_SECRET": SECRET})


@pytest.fixture(scope="module")
def sid(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return new_session(client, tmp_path_factory.mktemp("agents"), "attacker")


@pytest.fixture(scope="module")
def victim(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another session, with a secret of its own in its workspace."""
    victim = new_session(client, tmp_path_factory.mktemp("agents"), "victim")
    assert run(client, victim, f"echo {SECRET} > diary.txt")["exitCode"] == 0
    return victim


def failed(result: dict) -> bool:
    return result["exitCode"] != 0


# 1. environment


def test_secret_env_of_the_runner_is_absent_from_the_sandbox(
    gateway: GatewayProcess, client: httpx.Client, sid: str
) -> None:
    assert gateway.process is not None
    host_environ = Path(f"/proc/{gateway.process.pid}/environ").read_bytes()
    assert f"SUPER_SECRET={SECRET}".encode() in host_environ.split(b"\0")
    result = run(client, sid, "env; cat /proc/[0-9]*/environ | tr '\\0' '\\n'")
    assert result["exitCode"] == 0 and "HOME=/workspace" in result["stdout"]
    assert "SUPER_SECRET" not in result["stdout"]
    assert SECRET not in result["stdout"]


# 2. host files


def test_host_shadow_file_is_unreadable(client: httpx.Client, sid: str) -> None:
    assert Path("/etc/shadow").is_file()
    result = run(client, sid, "cat /etc/shadow")
    assert failed(result) and "No such file" in result["stderr"]


def test_gateway_data_dir_and_database_are_unreachable(
    gateway: GatewayProcess, client: httpx.Client, sid: str
) -> None:
    database = gateway.data_dir / "ash.db"
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from sessions").fetchone()[0] >= 1
    for attempt in (f"ls {gateway.data_dir}", f"cat {database}", f"ls {gateway.data_dir.parent}"):
        result = run(client, sid, attempt)
        assert failed(result) and "No such file" in result["stderr"], attempt
    listing = run(client, sid, "ls -a /")["stdout"].split()
    assert "data" not in listing and "ash.db" not in run(client, sid, "ls -aR /workspace")["stdout"]


def test_runner_source_tree_is_read_only_and_the_repository_absent(
    client: httpx.Client, sid: str
) -> None:
    repository = Path(runner.__file__).resolve().parents[1]
    assert (repository / "runner" / "local.py").is_file()
    inside = "/opt/ash/lib/runner/local.py"
    assert run(client, sid, f"head -c 3 {inside}")["stdout"] == '"""'
    for attempt in (f"echo pwned >> {inside}", "touch /opt/ash/lib/runner/evil.py",
                    "rm /opt/ash/lib/wire/events.py"):
        result = run(client, sid, attempt)
        assert failed(result), attempt
        assert any(why in result["stderr"] for why in ("Read-only", "Permission denied")), result
    assert failed(run(client, sid, f"ls {repository}"))
    assert "pwned" not in (repository / "runner" / "local.py").read_text()
    assert not (repository / "runner" / "evil.py").exists()
    assert (repository / "wire" / "events.py").is_file()


def test_another_sessions_workspace_is_unreachable(
    gateway: GatewayProcess, client: httpx.Client, sid: str, victim: str
) -> None:
    victim_workspace = gateway.data_dir / "sandboxes" / victim / "workspace"
    assert run(client, victim, "cat diary.txt")["stdout"] == f"{SECRET}\n"
    result = run(client, sid, f"cat {victim_workspace}/diary.txt; ls /workspace; "
                              f"grep -rs {SECRET} /workspace /tmp /agent")
    assert "No such file" in result["stderr"]
    assert SECRET not in result["stdout"] and "diary.txt" not in result["stdout"]


# 3. writes outside /workspace and /tmp


def test_writes_outside_workspace_and_tmp_fail(client: httpx.Client, sid: str) -> None:
    targets = ["/", "/etc", "/usr/bin", "/usr/local", "/opt/ash/lib", "/agent", "/dev",
               "/dev/shm", "/root", "/bin", os.path.dirname(PYTHON)]
    for target in targets:
        result = run(client, sid, f"touch {target}/ash-probe")
        assert failed(result), f"{target} is writable"
    assert failed(run(client, sid, "echo x >> /etc/passwd"))
    assert failed(run(client, sid, "echo '|/tmp/x' > /proc/sys/kernel/core_pattern"))
    assert Path("/proc/sys/kernel/core_pattern").read_text() != "|/tmp/x\n"
    ok = run(client, sid, "touch /workspace/probe /tmp/probe && echo written")
    assert ok["stdout"] == "written\n"


# 4. processes


def test_ps_shows_only_the_sandboxs_own_processes(
    gateway: GatewayProcess, client: httpx.Client, sid: str, victim: str
) -> None:
    assert gateway.process is not None
    victim_bridge = bridge_host_pid(victim)
    result = run(client, sid, "ps -eo pid=,comm=")
    processes = [line.split() for line in result["stdout"].splitlines()]
    pids = {int(pid) for pid, _ in processes}
    names = {name for _, name in processes}
    assert names <= {"bwrap", os.path.basename(PYTHON)[:15], "sh", "ps"}, names
    assert len(processes) <= 5
    assert gateway.process.pid not in pids and victim_bridge not in pids
    assert failed(run(client, sid, f"ls /proc/{gateway.process.pid}"))


def test_kill_cannot_reach_the_host_or_other_sandboxes(
    gateway: GatewayProcess, client: httpx.Client, sid: str, victim: str
) -> None:
    assert gateway.process is not None
    targets = [gateway.process.pid, bridge_host_pid(victim), os.getpid()]
    for pid in targets:
        result = run(client, sid, f"kill -9 {pid}")
        assert failed(result) and "No such process" in result["stderr"], pid
    assert gateway.process.poll() is None
    assert client.get("/health").json()["status"] == "ok"
    assert send_message(client, victim, "still here?")[-1].data["status"] == "ok"


# 5. network


def test_tcp_to_a_listener_on_the_hosts_loopback_fails(client: httpx.Client, sid: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the listener is really there: the host can reach it
        listener.accept()[0].close()
        result = python(client, sid, f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3)
except OSError as exc:
    print("refused", exc)
else:
    print("CONNECTED")
""")
        assert result["stdout"].startswith("refused"), result
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_dns_and_egress_fail(client: httpx.Client, sid: str) -> None:
    result = python(client, sid, """
import socket
for host, port in (("1.1.1.1", 53), ("8.8.8.8", 443), ("10.0.2.2", 80)):
    try:
        socket.create_connection((host, port), timeout=3)
        print("CONNECTED", host)
    except OSError as exc:
        print("blocked", host, exc.errno)
try:
    print("RESOLVED", socket.gethostbyname("example.com"))
except OSError:
    print("no dns")
""")
    assert "CONNECTED" not in result["stdout"] and "RESOLVED" not in result["stdout"]
    assert result["stdout"].count("blocked") == 3 and "no dns" in result["stdout"]
    interfaces = run(client, sid, "cat /proc/net/dev")["stdout"]
    assert [line.split(":")[0].strip() for line in interfaces.splitlines()[2:]] == ["lo"]


# 9. escapes through /proc and ptrace


def test_proc_1_root_does_not_lead_out(client: httpx.Client, sid: str) -> None:
    result = run(client, sid, "ls /proc/1/root/; cat /proc/1/root/etc/shadow; "
                              "cat /proc/1/cmdline | tr '\\0' ' '")
    assert result["stderr"].count("Permission denied") == 2, result
    assert "sandboxes" not in result["stdout"] and "/workspace" not in result["stdout"]


def test_inherited_descriptors_lead_nowhere(client: httpx.Client, sid: str) -> None:
    """Every descriptor of every process in the sandbox is a pipe, a socket, /dev/null or
    something inside the sandbox; none reopens onto a host path."""
    result = python(client, sid, """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            print(pid, fd, os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
""")
    targets = [line.split(" ", 2)[2] for line in result["stdout"].splitlines()]
    assert targets, result
    inside = ("pipe:", "socket:", "anon_inode:", "/dev/null", "/proc/", "/workspace", "/tmp")
    assert all(t.startswith(inside) for t in targets), targets
    reopen = run(client, sid, "for f in /proc/[0-9]*/fd/*; do cat $f/.. 2>&1; done | sort -u; "
                              "echo fd=$ASH_BRIDGE_FD; ls /proc/2/fd 2>&1")
    assert "Not a directory" in reopen["stdout"] or "Permission denied" in reopen["stdout"]
    # The bridge socket: named by no variable, and the non-dumpable bridge's fds are closed.
    assert "fd=\n" in reopen["stdout"], reopen
    assert "cannot open directory '/proc/2/fd': Permission denied" in reopen["stdout"], reopen


def test_ptrace_cannot_attach_outside_the_sandbox(
    gateway: GatewayProcess, client: httpx.Client, sid: str
) -> None:
    assert gateway.process is not None
    result = python(client, sid, f"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
for pid in ({gateway.process.pid}, 1):
    ok = libc.ptrace(16, pid, None, None) == 0  # PTRACE_ATTACH
    print(pid, "ATTACHED" if ok else errno.errorcode[ctypes.get_errno()])
""")
    assert result["stdout"].splitlines() == [f"{gateway.process.pid} ESRCH", "1 EPERM"], result


# who the agent is


def test_agent_is_an_unprivileged_user_inside_and_on_the_host(
    client: httpx.Client, sid: str
) -> None:
    inside = run(client, sid, "id -u; grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status; "
                              "unshare -U true 2>&1; true")
    lines = inside["stdout"].splitlines()
    assert lines[0] == "1000"
    assert all(line.endswith("0000000000000000") for line in lines[1:5]), lines
    assert "unshare failed" in inside["stdout"]
    status = Path(f"/proc/{bridge_host_pid(sid)}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["100000"] * 4
