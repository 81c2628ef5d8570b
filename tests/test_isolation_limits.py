"""The isolation suite, part 2: a hostile agent cannot starve the host or other sessions.

A fork bomb, a memory bomb and a disk filler, each run by the agent in a turn (`/bash`),
through a real gateway. The sandbox is stopped whole when it hits a limit; its client
gets an `error` event naming the cause and the limit; the session is paused and can be
resumed; the gateway and every other session carry on.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import send_message
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import PYTHON, module_gateway, new_session, run, session_status
from tests.sse_client import SseEvent

SLOW_TURN = {"tokenIntervalMs": 50, "tokens": 30}
"""A turn of about 1.5 s that another session runs while the bomb goes off."""


gateway, client = module_gateway("limits")


@pytest.fixture(scope="module")
def bystander(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return new_session(client, tmp_path_factory.mktemp("agents"), "bystander")


def error_of(events: list[SseEvent]) -> dict:
    errors = [e.data for e in events if e.event == "error"]
    assert errors, [e.event for e in events]
    return errors[-1]


def turn_beside(client: httpx.Client, session_id: str) -> tuple[threading.Thread, list]:
    """Start a slow turn of `session_id` in a thread; the list gets its events."""
    result: list[list[SseEvent]] = []

    def turn() -> None:
        with make_client_like(client) as other:
            result.append(send_message(other, session_id, "meanwhile", options=SLOW_TURN))

    thread = threading.Thread(target=turn)
    thread.start()
    return thread, result


def make_client_like(client: httpx.Client) -> httpx.Client:
    return httpx.Client(base_url=client.base_url, http2=True, http1=False,
                        headers=dict(client.headers), timeout=60)


def assert_paused_then_resumable(client: httpx.Client, session_id: str) -> None:
    assert session_status(client, session_id) == "paused"
    assert client.post(f"/api/sessions/{session_id}/resume").status_code == 200
    assert send_message(client, session_id, "back again")[-1].data["status"] == "ok"


# 6. fork bomb


def test_fork_bomb_is_contained_by_the_pids_limit(
    client: httpx.Client, bystander: str, tmp_path: Path
) -> None:
    sid = new_session(client, tmp_path, "forker", {"limits": {"pids": 32}})
    thread, beside = turn_beside(client, bystander)
    events = send_message(client, sid, "/bash bomb() { bomb | bomb & }; bomb")
    thread.join(30)
    error = error_of(events)
    assert error["code"] == "pids_limit" and error["limit"] == 32
    assert "limit of 32 processes" in error["error"]
    assert events[-1].data["status"] == "error"
    assert client.get("/health").json()["status"] == "ok"
    assert [e.event for e in beside[0]].count("text_delta") == SLOW_TURN["tokens"]
    assert beside[0][-1].data["status"] == "ok"
    assert_paused_then_resumable(client, sid)


# 7. memory bomb


def test_memory_bomb_is_killed_and_its_session_paused(
    client: httpx.Client, bystander: str, tmp_path: Path
) -> None:
    sid = new_session(client, tmp_path, "hog", {"limits": {"memory_mb": 128}})
    thread, beside = turn_beside(client, bystander)
    events = send_message(client, sid, f"/bash {PYTHON} -c \"x = b'a' * (1 << 30)\"")
    thread.join(30)
    error = error_of(events)
    assert error["code"] == "memory_limit" and error["limit"] == 128
    assert "out of memory" in error["error"] and "128 MiB" in error["error"]
    assert [e.event for e in beside[0]].count("text_delta") == SLOW_TURN["tokens"]
    assert beside[0][-1].data["status"] == "ok"
    assert_paused_then_resumable(client, sid)


# 8. disk


def test_filling_the_workspace_stops_at_its_limit(
    gateway: GatewayProcess, client: httpx.Client, tmp_path: Path
) -> None:
    sid = new_session(client, tmp_path, "filler", {"limits": {"disk_mb": 32}})
    image = gateway.data_dir / "sandboxes" / sid / "workspace.img"
    before = os.stat(image).st_blocks * 512
    result = run(client, sid, "dd if=/dev/zero of=/workspace/fill bs=1M count=256")
    assert result["exitCode"] != 0 and "No space left on device" in result["stderr"]
    size = int(run(client, sid, "stat -c %s /workspace/fill")["stdout"])
    assert 16 * 2**20 < size <= 32 * 2**20
    grown = os.stat(image).st_blocks * 512 - before
    assert grown <= 33 * 2**20, f"the host's disk grew by {grown} bytes"
    assert run(client, sid, "rm fill && echo ok > note")["exitCode"] == 0


def test_a_turn_that_fills_the_disk_pauses_its_session(
    client: httpx.Client, bystander: str, tmp_path: Path
) -> None:
    sid = new_session(client, tmp_path, "spiller", {"limits": {"disk_mb": 32}})
    events = send_message(client, sid, "/bash dd if=/dev/zero of=big bs=1M count=256")
    error = error_of(events)
    assert error["code"] == "disk_limit" and error["limit"] == 32
    assert "32 MiB disk limit" in error["error"]
    assert session_status(client, sid) == "paused"
    assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
    assert run(client, sid, "ls")["stdout"].split() == ["big"]
    assert run(client, sid, "rm big")["exitCode"] == 0
    assert send_message(client, sid, "space again")[-1].data["status"] == "ok"
    assert send_message(client, bystander, "unaffected")[-1].data["status"] == "ok"
