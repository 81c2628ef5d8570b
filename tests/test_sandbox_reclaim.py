"""Idle sandboxes given back: at the sandbox cap a new session frees the least recently
used idle sandbox (never one running a turn), and the idle timeout pauses a session left
untouched and frees its sandbox. Either way the session keeps its state: it resumes (cold)
with its conversation and files. A real gateway with bwrap sandboxes and the mock agent,
standalone and split (a coordinator and a real runner)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import bridge_pids
from tests.sandbox_helpers import running_gateway
from tests.split_cluster import Cluster, session_of
from tests.sse_client import reply_text
from tests.test_stop_fork import exec_stdout, resume, slow_turn

IDLE_TIMEOUT = 1.0
WAIT = 20.0


@pytest.fixture(params=["standalone", "split"])
def capped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of a gateway that holds at most two sandboxes, the `echo` agent deployed."""
    if request.param == "standalone":
        with running_gateway(tmp_path / "data", extra_args=["--max-sandboxes", "2"]) as gw, \
                make_client(gw) as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            yield client
    else:
        with Cluster(tmp_path / "cluster").start() as cluster:
            cluster.add_runners("r1", max_sandboxes=2)
            with cluster.client() as client:
                deploy(client, "echo", make_agent_folder(tmp_path))
                yield client


@pytest.fixture(params=["standalone", "split"])
def idle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of a gateway whose idle timeout is `IDLE_TIMEOUT`, `echo` deployed."""
    args = ["--idle-timeout", str(IDLE_TIMEOUT)]
    if request.param == "standalone":
        with running_gateway(tmp_path / "data", extra_args=args) as gw, \
                make_client(gw) as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            yield client
    else:
        with Cluster(tmp_path / "cluster", gateway_args=args).start() as cluster:
            cluster.add_runners("r1")
            with cluster.client() as client:
                deploy(client, "echo", make_agent_folder(tmp_path))
                yield client


def wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def remember(client: httpx.Client, sid: str, name: str) -> None:
    send_message(client, sid, f"my name is {name}")
    exec_stdout(client, sid, f"echo {name} > note.txt")


def remembers(client: httpx.Client, sid: str, name: str) -> None:
    assert f"my name is {name}" in reply_text(send_message(client, sid, "who am I?"))
    assert exec_stdout(client, sid, "cat note.txt") == f"{name}\n"


def test_at_the_cap_the_least_recently_used_idle_sandbox_makes_room(
    capped: httpx.Client,
) -> None:
    client = capped
    oldest = create_session(client, "echo")["id"]
    newer = create_session(client, "echo")["id"]
    remember(client, oldest, "Ada")
    remember(client, newer, "Bo")
    send_message(client, oldest, "still here")  # now `newer` is the least recently used
    third = client.post("/api/sessions", json={"agent": "echo"})
    assert third.status_code == 201, third.text
    evicted = session_of(client, newer)
    assert evicted["sandboxId"] is None
    assert evicted["status"] == "active"  # its next message starts a sandbox again
    assert session_of(client, oldest)["sandboxId"] is not None
    remembers(client, newer, "Bo")  # made room by freeing the then least recent: `oldest`
    assert session_of(client, oldest)["sandboxId"] is None


def test_a_paused_session_evicted_resumes_cold_with_its_memory(capped: httpx.Client) -> None:
    client = capped
    paused = create_session(client, "echo")["id"]
    remember(client, paused, "Cy")
    assert client.post(f"/api/sessions/{paused}/pause").status_code == 200
    create_session(client, "echo")
    create_session(client, "echo")  # frees the paused one's sandbox, its state kept
    evicted = session_of(client, paused)
    assert (evicted["status"], evicted["sandboxId"]) == ("paused", None)
    assert resume(client, paused)["status"] == "active"
    remembers(client, paused, "Cy")


def test_a_sandbox_running_a_turn_is_never_evicted(capped: httpx.Client) -> None:
    client = capped
    busy = create_session(client, "echo")["id"]
    idle_one = create_session(client, "echo")["id"]
    with slow_turn(client, busy, tokens=200) as rest:
        created = client.post("/api/sessions", json={"agent": "echo"})
        assert created.status_code == 201, created.text
        assert session_of(client, idle_one)["sandboxId"] is None
        fourth = client.post("/api/sessions", json={"agent": "echo"})  # the third's slot
        assert fourth.status_code == 201, fourth.text
        assert session_of(client, busy)["sandboxId"] is not None
        assert b"event: done" in b"".join(rest)


def test_an_idle_session_is_paused_and_its_sandbox_freed(idle: httpx.Client) -> None:
    client = idle
    sid = create_session(client, "echo")["id"]
    remember(client, sid, "Di")
    wait_for(lambda: session_of(client, sid)["status"] == "paused", "paused")
    assert session_of(client, sid)["sandboxId"] is None
    assert client.get("/health").json()["sandboxes"]["live"] == 0
    assert resume(client, sid)["status"] == "active"
    remembers(client, sid, "Di")


def test_a_session_in_use_is_not_paused_by_the_idle_timeout(idle: httpx.Client) -> None:
    client = idle
    sid = create_session(client, "echo")["id"]
    with slow_turn(client, sid, tokens=100) as rest:  # 3 s: longer than the timeout
        assert b"event: done" in b"".join(rest)
    assert session_of(client, sid)["status"] == "active"


def test_the_idle_sweep_leaves_no_bridge_behind(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "data",
                         extra_env={"ASH_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}) as gw, \
            make_client(gw) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        sid = create_session(client, "echo")["id"]
        assert bridge_pids(sid)
        wait_for(lambda: bridge_pids(sid) == [], "freed")
        assert session_of(client, sid)["status"] == "paused"
