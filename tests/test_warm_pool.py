"""The warm pool: sandboxes started before their sessions, through real gateways and runners
with bubblewrap, cgroups and workspace disks.

A warm sandbox is found on the host by the ASH_WARM_SLOT its processes were started with;
a session tells which slot it got through `exec` (its shell inherits the variable).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.model_stub import StubProcess
from gateway.cli import parse_args as gateway_args
from runner import mountinfo
from runner.bridge.server import BadBind, parse_bind
from runner.cli import parse_args as runner_args
from runner.local import LocalBackend
from runner.sandbox import BridgeSettings
from runner.warm_pool import DEFAULT_SIZE
from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.runner_fixtures import collect, make_agent, message_text
from tests.sandbox_helpers import cgroup_dir, pool_of, run, running_gateway, wait_for_pool
from tests.split_cluster import Cluster, RunnerProcess
from tests.sse_client import assistant_text, reply_text
from wire.events import DONE, WARM_SLOT_ENV

WAIT = 60.0
"""Seconds a pool gets to fill on a busy two-core machine: a timeout, not a speed
assertion (bench/spawn.py measures the speed)."""


def pooled_gateway(data_dir: Path, size: int) -> contextlib.AbstractContextManager[GatewayProcess]:
    return running_gateway(data_dir, extra_env={"ASH_WARM_POOL": str(size)})


def pid_of(process: GatewayProcess | RunnerProcess) -> int:
    assert process.process is not None
    return process.process.pid


def warm_slots(owner: int) -> dict[str, list[int]]:
    """The warm-pool sandboxes (bound or not) of the runner with pid `owner`: each slot and
    its processes (they sit in cgroups below the runner's, `ash/<pid>.<start>.<n>/`)."""
    needle = f"{WARM_SLOT_ENV}=".encode()
    slots: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            if f"/ash/{owner}.".encode() not in (entry / "cgroup").read_bytes():
                continue
        except OSError:
            continue
        for variable in environ:
            if variable.startswith(needle):
                slots.setdefault(variable[len(needle):].decode(), []).append(int(entry.name))
    return slots


def the_warm_slot(client: httpx.Client, owner: int) -> tuple[str, list[int]]:
    """The one warm sandbox of a runner (pid `owner`) with a pool of one, once it is ready."""
    wait_for_pool(client, 1)
    (slot, pids), = warm_slots(owner).items()
    return slot, pids


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # killing one may have taken others
            os.kill(pid, signal.SIGKILL)


def slot_of(client: httpx.Client, session_id: str) -> str:
    """The warm slot the session's sandbox came from ('' for a cold-started one)."""
    result = run(client, session_id, f"printf %s \"${WARM_SLOT_ENV}\"")
    assert result["exitCode"] == 0, result
    slot: str = result["stdout"]
    return slot


def reply(client: httpx.Client, session_id: str, content: str) -> str:
    events = send_message(client, session_id, content)
    assert events[-1].event == "done" and events[-1].data["status"] == "ok", events
    return assistant_text(events)


@pytest.fixture
def pooled(tmp_path: Path) -> Iterator[tuple[httpx.Client, int]]:
    """A client of a gateway with a pool of one, and the gateway's pid."""
    with pooled_gateway(tmp_path / "data", 1) as gateway, make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        yield client, pid_of(gateway)


def test_a_create_is_served_by_a_sandbox_started_before_it(
        pooled: tuple[httpx.Client, int]) -> None:
    client, owner = pooled
    assert wait_for_pool(client, 1)["served"] == 0
    assert client.get("/health").json()["sandboxes"]["live"] == 0  # warm is not live
    before = warm_slots(owner)
    session = create_session(client, "echo")
    slot = slot_of(client, session["id"])
    assert slot in before
    assert all(os.path.exists(f"/proc/{pid}") for pid in before[slot])
    assert pool_of(client)["served"] == 1
    assert client.get("/health").json()["sandboxes"]["live"] == 1
    assert "You said: hello" in reply(client, session["id"], "hello")


def test_a_warm_sandbox_holds_nothing_of_any_session_or_agent(
        pooled: tuple[httpx.Client, int]) -> None:
    client, owner = pooled
    _, pids = the_warm_slot(client, owner)
    for pid in pids:
        names = {v.split(b"=", 1)[0] for v in Path(f"/proc/{pid}/environ").read_bytes().split(
            b"\0") if v}
        # The environment each process started with (ASH_BRIDGE_FD: the bridge reads it, then
        # drops it; test_a_bridge_from_the_pool_names_its_socket_to_no_command checks).
        assert names <= {b"LANG", b"TERM", b"PATH", b"HOME", b"PWD", b"ASH_BRIDGE_FD",
                         b"ASH_BACKEND", WARM_SLOT_ENV.encode()}, names  # PWD: from /bin/sh
    for agent_file in Path(f"/proc/{pids[-1]}/root/agent").iterdir():
        raise AssertionError(f"a warm sandbox's /agent holds {agent_file.name}")


def test_a_bridge_from_the_pool_names_its_socket_to_no_command(
        pooled: tuple[httpx.Client, int]) -> None:
    client, _ = pooled
    wait_for_pool(client, 1)
    session = create_session(client, "echo")["id"]
    assert pool_of(client)["served"] == 1
    seen = run(client, session, "echo fd=$ASH_BRIDGE_FD; env | grep -c BRIDGE; "
                                "ls /proc/2/fd 2>&1; true")
    assert seen["stdout"].startswith("fd=\n0\n"), seen
    assert "cannot open directory '/proc/2/fd': Permission denied" in seen["stdout"], seen


def test_a_bind_frame_must_carry_an_env_of_strings() -> None:
    assert parse_bind(b'{"env": {"ASH_SESSION_ID": "s1"}}') == {"ASH_SESSION_ID": "s1"}
    for bad in (b"nope", b"[]", b'{"env": []}', b'{"env": {"A": 1}}', b'{"env": {"A": "\\u0000"}}'):
        with pytest.raises(BadBind):
            parse_bind(bad)


def test_the_pool_refills_after_serving_a_create(pooled: tuple[httpx.Client, int]) -> None:
    client, _ = pooled
    wait_for_pool(client, 1)
    first = slot_of(client, create_session(client, "echo")["id"])
    wait_for_pool(client, 1)
    second = slot_of(client, create_session(client, "echo")["id"])
    assert first and second and first != second
    assert pool_of(client)["served"] == 2


def test_a_warm_sandbox_that_died_is_never_handed_out(
        pooled: tuple[httpx.Client, int]) -> None:
    client, owner = pooled
    dead, pids = the_warm_slot(client, owner)
    kill_all(pids)
    session = create_session(client, "echo")
    assert slot_of(client, session["id"]) != dead
    assert "You said: still here" in reply(client, session["id"], "still here")
    wait_for_pool(client, 1)
    assert dead not in warm_slots(owner)


async def test_a_warm_bridge_killed_just_before_its_bind_is_replaced(tmp_path: Path) -> None:
    """The kill lands after `take` saw the sandbox alive (the event loop has not yet seen
    the exit): the bind finds the bridge gone and the create goes on without it."""
    backend = LocalBackend(tmp_path / "data", settings=BridgeSettings(), warm_pool=1)
    try:
        backend.start_warm_pool()
        deadline = time.monotonic() + WAIT
        while (pool := backend.stats().pool) is not None and pool.ready < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        (_, pids), = warm_slots(os.getpid()).items()
        kill_all(pids)
        agent = make_agent(tmp_path)
        info = await backend.create("sess-1", agent)
        assert info.pid not in pids and not info.restored
        events = await collect(backend.send("sess-1", "after the kill"))
        assert events[-1].type == DONE
        assert "You said: after the kill" in message_text(events)
        assert backend.stats().pool is not None and backend.stats().pool.served == 0
    finally:
        await backend.close()


def test_sessions_from_the_pool_see_only_their_own_agent_workspace_and_env(
        tmp_path: Path) -> None:
    with pooled_gateway(tmp_path / "data", 2) as gateway, make_client(gateway) as client:
        for name in ("alpha", "beta"):
            folder = make_agent_folder(tmp_path, name, {"backend": "mock",
                                                        "env": {"AGENT_SECRET": f"{name}-env"}})
            (folder / f"{name}-only.txt").write_text(f"{name} secret\n")
            deploy(client, name, folder)
        wait_for_pool(client, 2)
        alpha = create_session(client, "alpha")["id"]
        beta = create_session(client, "beta")["id"]
        assert pool_of(client)["served"] == 2
        run(client, alpha, "echo alpha-work > /workspace/alpha-file")
        seen = run(client, beta, "ls -A /agent /workspace; cat /agent/CLAUDE.md; "
                                 "echo \"$AGENT_SECRET $ASH_SESSION_ID\"; "
                                 "cat /agent/alpha-only.txt /workspace/alpha-file")
        assert "beta-only.txt" in seen["stdout"] and "# beta" in seen["stdout"]
        assert f"beta-env {beta}" in seen["stdout"]
        assert "alpha" not in seen["stdout"]
        assert seen["exitCode"] != 0 and "No such file" in seen["stderr"]
        own = run(client, alpha, "cat /workspace/alpha-file /agent/alpha-only.txt; "
                                 "touch /agent/written")
        assert own["stdout"] == "alpha-work\nalpha secret\n"
        assert "Read-only file system" in own["stderr"]


def test_cold_resume_after_restart_finds_the_workspace_of_a_session_from_the_pool(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pooled_gateway(data, 1) as gateway, make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        wait_for_pool(client, 1)
        sid = create_session(client, "echo")["id"]
        assert slot_of(client, sid)
        reply(client, sid, "I am Ada")
        run(client, sid, "echo kept > /workspace/note")
        assert client.post(f"/api/sessions/{sid}/pause").status_code == 200
    assert (data / "sandboxes" / sid / "workspace.img").is_file()
    with pooled_gateway(data, 1) as gateway, make_client(gateway) as client:
        resumed = client.post(f"/api/sessions/{sid}/resume")
        assert resumed.status_code == 200, resumed.text
        assert slot_of(client, sid) == ""  # a cold resume: its own sandbox, on its own disk
        assert run(client, sid, "cat /workspace/note")["stdout"] == "kept\n"
        assert "Earlier you said: I am Ada" in reply(client, sid, "who am I?")


def test_shutdown_leaves_no_cgroups_loop_devices_or_mounts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pooled_gateway(data, 2) as gateway, make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        wait_for_pool(client, 2)
        sid = create_session(client, "echo")["id"]
        wait_for_pool(client, 2)
        owner = pid_of(gateway)
        slots = warm_slots(owner)
        assert len(slots) == 3
        groups = {cgroup_dir(pids[0], "memory") for pids in slots.values()}
        assert all(group.is_dir() for group in groups)
        images = list((data / "sandboxes").glob("**/workspace.img"))
        assert len(images) == 3
    deadline = time.monotonic() + 10
    while any(group.exists() for group in groups) or loop_images_under(data):
        assert time.monotonic() < deadline, (groups, loop_images_under(data))
        time.sleep(0.05)
    assert not warm_slots(owner)
    assert not [m.path for m in mountinfo.read() if str(data) in str(m.path)]
    assert not (data / "sandboxes" / ".pool").exists()
    assert (data / "sandboxes" / sid / "workspace.img").is_file()  # kept for a cold resume
    assert not (data / "sandboxes" / sid / "agent").exists()


def loop_images_under(root: Path) -> list[str]:
    backing = (path.read_text().strip() for path in
               Path("/sys/block").glob("loop*/loop/backing_file"))
    return [path for path in backing if path.startswith(str(root))]


def test_a_runner_reports_its_pool_as_warming_and_creates_from_it(tmp_path: Path) -> None:
    with Cluster(tmp_path).start() as cluster:
        runner, = cluster.add_runners("r1", extra_args=["--warm-pool", "1"])
        with cluster.client() as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            deadline = time.monotonic() + WAIT
            while cluster.runner_states()["r1"]["capacity"]["warming"] < 1:
                assert time.monotonic() < deadline, cluster.runner_states()
                time.sleep(0.05)
            assert cluster.runner_states()["r1"]["capacity"]["active"] == 0
            before = warm_slots(pid_of(runner))
            session = create_session(client, "echo")
            assert slot_of(client, session["id"]) in before
            assert "You said: via the runner" in reply(client, session["id"], "via the runner")
            deadline = time.monotonic() + WAIT
            while (capacity := cluster.runner_states()["r1"]["capacity"]) != {
                    **capacity, "active": 1, "warming": 1}:
                assert time.monotonic() < deadline, capacity
                time.sleep(0.05)


def test_a_session_whose_agent_limits_differ_from_the_defaults_starts_cold(
        tmp_path: Path) -> None:
    with pooled_gateway(tmp_path / "data", 1) as gateway, make_client(gateway) as client:
        deploy(client, "small", make_agent_folder(tmp_path, "small", {
            "backend": "mock", "limits": {"disk_mb": 64}}))
        wait_for_pool(client, 1)
        sid = create_session(client, "small")["id"]
        assert slot_of(client, sid) == ""
        assert pool_of(client)["served"] == 0


def test_an_agent_with_a_bad_env_is_refused_without_using_up_the_pool(tmp_path: Path) -> None:
    with pooled_gateway(tmp_path / "data", 1) as gateway, make_client(gateway) as client:
        deploy(client, "bad", make_agent_folder(tmp_path, "bad", {
            "backend": "mock", "env": {"not a name": "x"}}))
        deploy(client, "echo", make_agent_folder(tmp_path))
        wait_for_pool(client, 1)
        refused = client.post("/api/sessions", json={"agent": "bad"})
        assert refused.status_code != 201 and "not a valid variable" in refused.text
        assert pool_of(client)["ready"] == 1
        sid = create_session(client, "echo")["id"]
        assert slot_of(client, sid) and pool_of(client)["served"] == 1


def test_a_claude_session_from_the_pool_connects_after_its_bind(
        tmp_path: Path, stub: StubProcess) -> None:
    """With a model key the pool's backend is claude: the warm bridge has the SDK imported,
    and connects its CLI (through the model proxy, with the session's token) once bound."""
    with running_gateway(tmp_path / "data", extra_env={
            "ANTHROPIC_BASE_URL": stub.url, "ANTHROPIC_API_KEY": "test-key",
            "ASH_WARM_POOL": "1"}) as gateway, make_client(gateway) as client:
        deploy(client, "claude", make_agent_folder(tmp_path, "claude", {
            "backend": "claude", "env": {"CLAUDE_CODE_MAX_RETRIES": "1",
                                         "API_TIMEOUT_MS": "30000"}}))
        wait_for_pool(client, 1)
        sid = create_session(client, "claude")["id"]
        assert slot_of(client, sid) and pool_of(client)["served"] == 1
        assert run(client, sid, "echo $CLAUDE_CODE_MAX_RETRIES")["stdout"] == "1\n"
        events = send_message(client, sid, "hello there")
        assert reply_text(events) == (
            "Turn 1. You said: hello there. This is the start of our conversation.")
        assert events[-1].data["status"] == "ok"



def test_the_pool_size_comes_from_the_flag_or_the_environment_on_both_entry_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASH_WARM_POOL", raising=False)
    monkeypatch.setenv("ASH_INTERNAL_SECRET", "s")
    runner = ["--gateway", "127.0.0.1:1"]
    assert gateway_args([]).warm_pool == runner_args(runner).warm_pool == DEFAULT_SIZE
    assert gateway_args(["--warm-pool", "0"]).warm_pool == 0
    monkeypatch.setenv("ASH_WARM_POOL", "5")
    assert gateway_args([]).warm_pool == runner_args(runner).warm_pool == 5
    assert runner_args([*runner, "--warm-pool", "1"]).warm_pool == 1
    monkeypatch.setenv("ASH_WARM_POOL", "many")
    with pytest.raises(SystemExit):
        gateway_args([])
