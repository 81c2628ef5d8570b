"""Stop and fork in split mode: a coordinator gateway and real runners. A stopped session's
state is in the gateway's store (its runner may die); a fork's state is seeded there, so
any runner resumes it."""

from __future__ import annotations

import signal

import httpx

from tests.conftest import create_session, send_message
from tests.split_cluster import echo_cluster_fixtures, session_of
from tests.sse_client import reply_text

cluster, client = echo_cluster_fixtures()


def run(client: httpx.Client, session_id: str, command: str) -> str:
    response = client.post(f"/api/sessions/{session_id}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    return response.json()["stdout"]


def post_ok(client: httpx.Client, path: str, status: int = 200) -> dict:
    response = client.post(path)
    assert response.status_code == status, response.text
    return response.json()["session"]


def test_stop_ships_the_state_so_another_runner_resumes_it(cluster, client) -> None:
    cluster.add_runners("first")
    sid = create_session(client, "echo")["id"]
    send_message(client, sid, "my name is Ada")
    run(client, sid, "echo after-the-turn > late.txt")
    stopped = post_ok(client, f"/api/sessions/{sid}/stop")
    assert stopped["status"] == "stopped" and stopped["sandboxId"] is None
    cluster.add_runners("second")
    cluster.runners["first"].stop(signal.SIGKILL)
    cluster.wait_for_runners("first", state="lost")

    assert post_ok(client, f"/api/sessions/{sid}/resume")["runnerId"] == "second"
    assert run(client, sid, "cat late.txt") == "after-the-turn\n"
    assert "my name is Ada" in reply_text(send_message(client, sid, "who am I?"))


def test_fork_of_a_live_session_remembers_and_sees_its_files(cluster, client) -> None:
    cluster.add_runners("first")
    sid = create_session(client, "echo")["id"]
    send_message(client, sid, "my name is Ada")
    run(client, sid, "echo parent-file > shared.txt")
    child = post_ok(client, f"/api/sessions/{sid}/fork", 201)
    assert child["parentSessionId"] == sid and child["status"] == "paused"

    post_ok(client, f"/api/sessions/{child['id']}/resume")
    assert run(client, child["id"], "cat shared.txt") == "parent-file\n"
    child_reply = reply_text(send_message(client, child["id"], "fork says kiwi"))
    assert "my name is Ada" in child_reply
    assert "kiwi" not in reply_text(send_message(client, sid, "parent again"))


def test_fork_of_a_stopped_session_whose_runner_died_comes_from_the_store(
    cluster, client
) -> None:
    cluster.add_runners("first")
    sid = create_session(client, "echo")["id"]
    send_message(client, sid, "remember mango")
    post_ok(client, f"/api/sessions/{sid}/stop")
    cluster.add_runners("second")
    cluster.runners["first"].stop(signal.SIGKILL)
    cluster.wait_for_runners("first", state="lost")

    child = post_ok(client, f"/api/sessions/{sid}/fork", 201)
    resumed = post_ok(client, f"/api/sessions/{child['id']}/resume")
    assert resumed["runnerId"] == "second"
    assert "remember mango" in reply_text(send_message(client, child["id"], "fruit?"))
    assert session_of(client, sid)["status"] == "stopped"
