"""Stop (sandbox gone, state kept, resumable) and fork (a new session with the parent's
conversation and workspace) through a real gateway, bwrap sandboxes and the mock agent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from tests.conftest import send_message
from tests.gateway_process import bridge_pids
from tests.sse_client import reply_text


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status
    assert fragment in body["error"], body


def exec_stdout(client: httpx.Client, sid: str, command: str) -> str:
    response = client.post(f"/api/sessions/{sid}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    return response.json()["stdout"]


@contextlib.contextmanager
def slow_turn(client: httpx.Client, sid: str, tokens: int = 10
              ) -> Iterator[Iterator[bytes]]:
    """A slow turn on `sid` (30 ms a token), its first chunk read; yields the rest of its
    raw stream."""
    with client.stream("POST", f"/api/sessions/{sid}/messages",
                       json={"content": "slow", "options": {"tokenIntervalMs": 30,
                                                            "tokens": tokens}}) as turn:
        chunks = turn.iter_raw()
        next(chunks)
        yield chunks


def status_of(client: httpx.Client, sid: str) -> str:
    return client.get(f"/api/sessions/{sid}").json()["session"]["status"]


def fork(client: httpx.Client, sid: str) -> dict:
    response = client.post(f"/api/sessions/{sid}/fork")
    assert response.status_code == 201, response.text
    return response.json()["session"]


def resume(client: httpx.Client, sid: str) -> dict:
    response = client.post(f"/api/sessions/{sid}/resume")
    assert response.status_code == 200, response.text
    return response.json()["session"]


# stop


def test_stop_destroys_the_sandbox_and_says_stopped(client, session) -> None:
    sid = session["id"]
    assert bridge_pids(sid)
    response = client.post(f"/api/sessions/{sid}/stop")
    assert response.status_code == 200, response.text
    stopped = response.json()["session"]
    assert stopped["status"] == "stopped"
    assert stopped["sandboxId"] is None
    assert bridge_pids(sid) == []
    listed = client.get("/api/sessions", params={"status": "stopped"}).json()["sessions"]
    assert [s["id"] for s in listed] == [sid]


def test_stopped_session_resumes_cold_with_its_memory_and_files(client, session) -> None:
    sid = session["id"]
    send_message(client, sid, "my name is Ada")
    exec_stdout(client, sid, "echo kept > note.txt")
    client.post(f"/api/sessions/{sid}/stop")
    assert resume(client, sid)["status"] == "active"
    assert bridge_pids(sid) != []
    assert "my name is Ada" in reply_text(send_message(client, sid, "who am I?"))
    assert exec_stdout(client, sid, "cat note.txt") == "kept\n"


def test_stopped_session_refuses_messages_and_exec_until_resumed(client, session) -> None:
    sid = session["id"]
    client.post(f"/api/sessions/{sid}/stop")
    assert_error(client.post(f"/api/sessions/{sid}/messages", json={"content": "hi"}), 409,
                 "stopped")
    assert_error(client.post(f"/api/sessions/{sid}/exec", json={"command": "true"}), 409,
                 "resume it first")
    assert status_of(client, sid) == "stopped"


def test_stop_twice_is_a_no_op(client, session) -> None:
    sid = session["id"]
    first = client.post(f"/api/sessions/{sid}/stop").json()["session"]
    again = client.post(f"/api/sessions/{sid}/stop")
    assert again.status_code == 200
    assert again.json()["session"] == first


def test_stop_of_a_paused_session_frees_its_warm_sandbox(client, session) -> None:
    sid = session["id"]
    client.post(f"/api/sessions/{sid}/pause")
    assert bridge_pids(sid)
    assert client.post(f"/api/sessions/{sid}/stop").json()["session"]["status"] == "stopped"
    assert bridge_pids(sid) == []


def test_stop_during_a_turn_is_409_and_the_turn_completes(client, session) -> None:
    sid = session["id"]
    with slow_turn(client, sid) as chunks:
        assert_error(client.post(f"/api/sessions/{sid}/stop"), 409, "busy")
        rest = b"".join(chunks)
    assert b"event: done" in rest
    assert status_of(client, sid) == "active"


def test_stop_of_an_ended_session_is_410(client, session) -> None:
    sid = session["id"]
    client.delete(f"/api/sessions/{sid}")
    assert_error(client.post(f"/api/sessions/{sid}/stop"), 410, "has ended")


def test_stop_of_an_unknown_session_is_404(client) -> None:
    assert_error(client.post("/api/sessions/nope/stop"), 404, "session not found")


def test_stopped_session_can_be_ended(client, session) -> None:
    sid = session["id"]
    client.post(f"/api/sessions/{sid}/stop")
    ended = client.delete(f"/api/sessions/{sid}")
    assert ended.status_code == 200
    assert ended.json()["session"]["status"] == "ended"


# fork


def test_fork_is_a_new_paused_session_naming_its_parent(client, session) -> None:
    sid = session["id"]
    forked = fork(client, sid)
    assert forked["id"] != sid
    assert forked["parentSessionId"] == sid
    assert forked["status"] == "paused"
    assert forked["agent"] == session["agent"]
    assert forked["sandboxId"] is None
    assert client.get(f"/api/sessions/{sid}").json()["session"]["parentSessionId"] is None


def test_fork_answers_from_the_parents_memory(client, session) -> None:
    sid = session["id"]
    send_message(client, sid, "my name is Ada")
    child = fork(client, sid)["id"]
    resume(client, child)
    assert "my name is Ada" in reply_text(send_message(client, child, "who am I?"))


def test_fork_sees_the_parents_files(client, session) -> None:
    sid = session["id"]
    exec_stdout(client, sid, "mkdir -p work && echo from-parent > work/plan.txt")
    child = fork(client, sid)["id"]
    resume(client, child)
    assert exec_stdout(client, child, "cat work/plan.txt") == "from-parent\n"
    events = send_message(client, child, "/bash cat work/plan.txt")
    results = [e.data for e in events if e.event == "tool_result"]
    assert results and "from-parent" in str(results[0])


def test_fork_and_parent_go_on_independently(client, session) -> None:
    sid = session["id"]
    send_message(client, sid, "shared start")
    child = fork(client, sid)["id"]
    resume(client, child)
    send_message(client, child, "only the fork knows kiwi")
    exec_stdout(client, child, "echo fork > fork-only.txt")
    send_message(client, sid, "only the parent knows plum")
    exec_stdout(client, sid, "echo parent > parent-only.txt")

    parent_reply = reply_text(send_message(client, sid, "recall"))
    child_reply = reply_text(send_message(client, child, "recall"))
    assert "shared start" in parent_reply and "shared start" in child_reply
    assert "plum" in parent_reply and "kiwi" not in parent_reply
    assert "kiwi" in child_reply and "plum" not in child_reply
    assert exec_stdout(client, sid, "ls").split() == ["parent-only.txt"]
    assert exec_stdout(client, child, "ls").split() == ["fork-only.txt"]


def test_fork_carries_the_parents_event_history(client, session) -> None:
    sid = session["id"]
    turn = send_message(client, sid, "hello")
    child = fork(client, sid)["id"]
    history = client.get(f"/api/sessions/{child}/stream/events").json()["events"]
    assert [e["id"] for e in history] == [e.id for e in turn]
    resume(client, child)
    later = send_message(client, child, "next")
    assert later[0].id == turn[-1].id + 1
    assert client.get(f"/api/sessions/{sid}/stream/events",
                      params={"after": turn[-1].id}).json()["events"] == []


def test_fork_of_a_stopped_session_carries_its_state(client, session) -> None:
    sid = session["id"]
    send_message(client, sid, "remember mango")
    client.post(f"/api/sessions/{sid}/stop")
    child = fork(client, sid)["id"]
    resume(client, child)
    assert "remember mango" in reply_text(send_message(client, child, "fruit?"))
    assert status_of(client, sid) == "stopped"


def test_fork_of_a_fork_names_its_own_parent(client, session) -> None:
    first = fork(client, session["id"])
    second = fork(client, first["id"])
    assert second["parentSessionId"] == first["id"]


def test_fork_of_an_unknown_session_is_404_and_creates_nothing(client) -> None:
    assert_error(client.post("/api/sessions/nope/fork"), 404, "session not found")
    assert client.get("/api/sessions").json()["sessions"] == []


def test_fork_of_an_ended_session_is_410_and_creates_nothing(client, session) -> None:
    sid = session["id"]
    client.delete(f"/api/sessions/{sid}")
    assert_error(client.post(f"/api/sessions/{sid}/fork"), 410, "has ended")
    assert [s["id"] for s in client.get("/api/sessions").json()["sessions"]] == [sid]


def test_fork_during_a_turn_is_409_and_creates_nothing(client, session) -> None:
    sid = session["id"]
    with slow_turn(client, sid) as chunks:
        assert_error(client.post(f"/api/sessions/{sid}/fork"), 409, "busy")
        for _ in chunks:
            pass
    assert [s["id"] for s in client.get("/api/sessions").json()["sessions"]] == [sid]


def test_ending_the_fork_leaves_the_parent_intact(client, session) -> None:
    sid = session["id"]
    exec_stdout(client, sid, "echo mine > keep.txt")
    child = fork(client, sid)["id"]
    client.delete(f"/api/sessions/{child}")
    assert exec_stdout(client, sid, "cat keep.txt") == "mine\n"


# exec timeout, in milliseconds as in the reference


def test_exec_accepts_a_timeout_in_milliseconds(client, session) -> None:
    response = client.post(f"/api/sessions/{session['id']}/exec",
                           json={"command": "echo ok", "timeout": 10000})
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "ok\n"
    assert response.json()["timedOut"] is False


def test_exec_timeout_of_0_or_over_300000_ms_is_400(client, session) -> None:
    for bad in (0, 300_001):
        assert_error(client.post(f"/api/sessions/{session['id']}/exec",
                                 json={"command": "true", "timeout": bad}),
                     400, "[1, 300000] milliseconds")
