"""POST /api/sessions/{id}/exec: a shell command in the session's sandbox."""

from __future__ import annotations

import time

from tests.conftest import send_message
from tests.gateway_process import kill_bridge
from tests.sse_client import parse_sse


def test_exec_returns_stdout_stderr_and_exit_code(client, session) -> None:
    response = client.post(f"/api/sessions/{session['id']}/exec",
                           json={"command": "echo out; echo err >&2; exit 7"})
    assert response.status_code == 200
    assert response.json() == {"exitCode": 7, "stdout": "out\n", "stderr": "err\n",
                               "truncated": False, "timedOut": False}


def test_exec_runs_in_the_session_workspace(client, session) -> None:
    sid = session["id"]
    client.post(f"/api/sessions/{sid}/exec", json={"command": "echo hi > note.txt"})
    shown = client.post(f"/api/sessions/{sid}/exec", json={"command": "cat note.txt; pwd"})
    assert shown.json()["stdout"].startswith("hi\n")
    assert shown.json()["stdout"].rstrip().endswith("workspace")


def test_exec_timeout_kills_the_command_not_the_sandbox(client, session) -> None:
    sid = session["id"]
    started = time.monotonic()
    result = client.post(f"/api/sessions/{sid}/exec",
                         json={"command": "sleep 30", "timeout": 300}).json()
    assert time.monotonic() - started < 10
    assert result["timedOut"] is True
    assert result["exitCode"] != 0
    assert send_message(client, sid, "still alive?")[-1].data["status"] == "ok"


def test_exec_output_is_bounded(client, session) -> None:
    result = client.post(f"/api/sessions/{session['id']}/exec",
                         json={"command": "head -c 2000000 /dev/zero | tr '\\0' y"}).json()
    assert result["truncated"] is True
    assert len(result["stdout"]) == 256 * 1024


def test_exec_runs_beside_a_turn_in_progress(client, session) -> None:
    sid = session["id"]
    with client.stream("POST", f"/api/sessions/{sid}/messages", json={
            "content": "slow", "options": {"tokenIntervalMs": 20, "tokens": 30}}) as stream:
        chunks = stream.iter_raw()
        head = next(chunks)
        during = client.post(f"/api/sessions/{sid}/exec", json={"command": "echo beside"})
        events = parse_sse([head, *chunks])
    assert during.json()["stdout"] == "beside\n"
    assert [e.event for e in events].count("text_delta") == 30
    assert "exec_result" not in {e.event for e in events}


def test_exec_validates_its_input(client, session) -> None:
    url = f"/api/sessions/{session['id']}/exec"
    assert client.post(url, json={}).status_code == 400
    assert client.post(url, json={"command": 5}).status_code == 400
    for bad in (0, -1, 300_001, 1.5, "5", True):
        response = client.post(url, json={"command": "true", "timeout": bad})
        assert response.status_code == 400, bad
        assert "`timeout`" in response.json()["error"]


def test_exec_on_paused_session_whose_sandbox_is_gone_is_409(client, session) -> None:
    sid = session["id"]
    client.post(f"/api/sessions/{sid}/pause")
    kill_bridge(sid)
    response = client.post(f"/api/sessions/{sid}/exec", json={"command": "true"})
    assert response.status_code == 409
    assert "resume it first" in response.json()["error"]


def test_exec_on_ended_session_is_410(client, session) -> None:
    client.delete(f"/api/sessions/{session['id']}")
    assert client.post(f"/api/sessions/{session['id']}/exec",
                       json={"command": "true"}).status_code == 410
