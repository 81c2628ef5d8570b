"""Strategy A: a runner that dies, freezes or shuts down loses no finished turn. Its
sessions are paused, and a resume restores each one, memory and workspace, on a
healthy runner from the state the gateway stored before the turn's `done`."""

from __future__ import annotations

import io
import signal
import tarfile
import time

import httpx
import orjson

from gateway.state_store import StateStore
from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.gateway_process import kill_bridge
from tests.split_cluster import HEARTBEAT, Cluster, echo_cluster_fixtures, session_of
from tests.sse_client import SseEvent, parse_sse, reply_text

SLOW = {"tokenIntervalMs": 100, "tokens": 60}


cluster, client = echo_cluster_fixtures()


def turn_cut_short(client: httpx.Client, session_id: str, cut, options=SLOW
                   ) -> tuple[list[SseEvent], float]:
    """Start a slow turn, call `cut()` once it streams; the turn's events and how long
    the stream took to end after the cut."""
    with client.stream("POST", f"/api/sessions/{session_id}/messages",
                       json={"content": "words of the cut turn", "options": options}) as response:
        chunks = response.iter_raw()
        seen = [next(chunks)]
        while b"text_delta" not in b"".join(seen):
            seen.append(next(chunks))
        first = b"".join(seen)
        cut_at = time.monotonic()
        cut()
        events = parse_sse([first, *chunks])
        return events, time.monotonic() - cut_at


def wait_for_status(client: httpx.Client, session_id: str, status: str,
                    timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while (session := session_of(client, session_id))["status"] != status:
        assert time.monotonic() < deadline, f"session stayed {session['status']}: {session}"
        time.sleep(0.02)
    return session


def tool_output(events: list[SseEvent]) -> str:
    return next(e.data["content"] for e in events if e.event == "tool_result")


def resume(client: httpx.Client, session_id: str) -> dict:
    response = client.post(f"/api/sessions/{session_id}/resume")
    assert response.status_code == 200, response.text
    return response.json()["session"]


def test_runner_killed_mid_stream_loses_no_finished_turn(cluster, client) -> None:
    cluster.add_runners("doomed")
    busy = create_session(client, "echo")["id"]
    idle = create_session(client, "echo")["id"]
    send_message(client, busy, "/bash echo failover-proof > proof.txt")
    send_message(client, busy, "remember the quince")
    send_message(client, idle, "remember the fig")
    cluster.add_runners("survivor")

    events, ended_after = turn_cut_short(
        client, busy, lambda: cluster.runners["doomed"].stop(signal.SIGKILL))

    assert [e.event for e in events][-2:] == ["error", "done"]
    assert events[-2].data == {"error": "runner lost", "code": "runner_lost", "runner": "doomed"}
    assert ended_after < 3 * HEARTBEAT
    for session_id in (busy, idle):
        assert wait_for_status(client, session_id, "paused")["runnerId"] == "doomed"
    assert cluster.runner_states()["doomed"]["state"] == "lost"
    for session_id in (busy, idle):
        resumed = resume(client, session_id)
        assert (resumed["status"], resumed["runnerId"]) == ("active", "survivor")
    reply = reply_text(send_message(client, busy, "what do you remember?"))
    assert "echo failover-proof > proof.txt | remember the quince." in reply
    assert "words of the cut turn" not in reply
    assert tool_output(send_message(client, busy, "/bash cat proof.txt")) == "failover-proof\n"
    assert "remember the fig" in reply_text(send_message(client, idle, "and you?"))


def test_frozen_runner_is_lost_after_three_missed_heartbeats(cluster, client) -> None:
    cluster.add_runners("frozen")
    session_id = create_session(client, "echo")["id"]
    send_message(client, session_id, "remember the walnut")
    cluster.add_runners("spare")

    events, ended_after = turn_cut_short(
        client, session_id, lambda: cluster.runners["frozen"].send_signal(signal.SIGSTOP))

    assert events[-2].data["code"] == "runner_lost"
    assert events[-1].event == "done"
    assert 2 * HEARTBEAT < ended_after < 3 * HEARTBEAT + 1.0
    wait_for_status(client, session_id, "paused")
    assert cluster.runner_states()["frozen"]["state"] == "lost"
    assert resume(client, session_id)["runnerId"] == "spare"
    assert "remember the walnut" in reply_text(send_message(client, session_id, "well?"))


def test_runner_back_from_the_dead_drops_the_sandboxes_that_moved_away(cluster, client) -> None:
    cluster.add_runners("frozen")
    moved = create_session(client, "echo")["id"]
    cluster.add_runners("spare")
    frozen = cluster.runners["frozen"]
    frozen.send_signal(signal.SIGSTOP)
    cluster.wait_for_runners("frozen", state="lost")
    assert resume(client, moved)["runnerId"] == "spare"

    frozen.send_signal(signal.SIGCONT)
    runners = cluster.wait_for_runners("frozen")
    deadline = time.monotonic() + 5
    while runners["frozen"]["capacity"]["active"] != 0:
        assert time.monotonic() < deadline, runners["frozen"]
        time.sleep(0.05)
        runners = cluster.runner_states()
    assert "back" in reply_text(send_message(client, moved, "back"))


def test_sigterm_finishes_the_running_turn_and_pauses_sessions_without_the_sweep(
    cluster, client
) -> None:
    # With a 5 s heartbeat, the sweep would need 15 s to notice this runner go.
    cluster.add_runners("leaving", heartbeat=5.0)
    busy = create_session(client, "echo")["id"]
    idle = create_session(client, "echo")["id"]
    send_message(client, idle, "remember the pear")
    cluster.add_runners("staying")
    leaving = cluster.runners["leaving"]

    events, _ = turn_cut_short(
        client, busy, lambda: leaving.send_signal(signal.SIGTERM),
        options={"tokenIntervalMs": 40, "tokens": 25})

    assert "error" not in [e.event for e in events]
    assert events[-1].event == "done"
    assert "words of the cut turn" in reply_text(events)
    for session_id in (busy, idle):
        paused = wait_for_status(client, session_id, "paused", timeout=1.0)
        assert paused["error"] == "runner leaving shut down"
    assert leaving.wait(10) == 0
    assert cluster.runner_states()["leaving"]["state"] == "gone"
    assert resume(client, busy)["runnerId"] == "staying"
    assert "words of the cut turn" in reply_text(send_message(client, busy, "and that?"))
    resume(client, idle)
    assert "remember the pear" in reply_text(send_message(client, idle, "and you?"))


def test_each_turns_state_is_stored_before_its_done(cluster, client) -> None:
    cluster.add_runners("r1")
    session_id = create_session(client, "echo")["id"]
    stored = StateStore(cluster.gateway.data_dir / "state")
    for turn in range(1, 4):
        send_message(client, session_id, f"/bash echo {turn} >> turns.txt")
        with tarfile.open(fileobj=io.BytesIO(stored.read(session_id) or b"")) as state:
            kept = state.extractfile("turns.txt")
            conversation = state.extractfile(".ash/mock/conversation.json")
            assert kept is not None and conversation is not None
            assert kept.read().split() == [str(n).encode() for n in range(1, turn + 1)]
            assert len(orjson.loads(conversation.read())) == 2 * turn


def test_state_over_the_cap_is_a_clear_turn_error(tmp_path) -> None:
    with Cluster(tmp_path, gateway_args=["--state-max-bytes", "20000"]).start() as cluster:
        cluster.add_runners("r1")
        with cluster.client() as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            session_id = create_session(client, "echo")["id"]
            send_message(client, session_id, "small")
            events = send_message(client, session_id,
                                  "/bash head -c 200000 /dev/urandom > big.bin")
            assert [e.event for e in events][-2:] == ["error", "done"]
            assert events[-2].data["code"] == "state_too_large"
            assert "over the 20000-byte limit" in events[-2].data["error"]
            assert session_of(client, session_id)["status"] == "active"


def test_pause_ships_state_changed_after_the_last_turn(cluster, client) -> None:
    cluster.add_runners("first")
    session_id = create_session(client, "echo")["id"]
    send_message(client, session_id, "hello")
    written = client.post(f"/api/sessions/{session_id}/exec",
                          json={"command": "echo written-after-the-turn > late.txt"})
    assert written.json()["exitCode"] == 0
    assert client.post(f"/api/sessions/{session_id}/pause").status_code == 200
    cluster.add_runners("second")
    cluster.runners["first"].stop(signal.SIGKILL)
    cluster.wait_for_runners("first", state="lost")

    assert resume(client, session_id)["runnerId"] == "second"
    read = client.post(f"/api/sessions/{session_id}/exec", json={"command": "cat late.txt"})
    assert read.json()["stdout"] == "written-after-the-turn\n"


def test_a_bridge_killed_mid_burst_on_a_runner_ends_the_turn_with_its_exit_error(
        cluster, client) -> None:
    """The runner ends the session's stream with ABORTED once the turn's last events are
    written; a gateway still relaying the burst to a slow reader reads every one of them
    (the turn ends with the sandbox's exit, not `runner_lost`)."""
    cluster.add_runners("keeper")
    session_id = create_session(client, "echo")["id"]

    def kill_then_read_slowly() -> None:
        kill_bridge(session_id)
        time.sleep(1.0)  # the burst's tail waits in the gateway's gRPC buffer meanwhile

    events, _ = turn_cut_short(client, session_id, kill_then_read_slowly,
                               options={"tokens": 100000, "tokenIntervalMs": 0})

    assert [e.event for e in events][-2:] == ["error", "done"]
    assert events[-2].data["code"] == "sandbox_exited"
    assert events[-1].data == {"sessionId": session_id, "status": "error"}
    assert cluster.runner_states()["keeper"]["state"] != "lost"
