"""The whole life of a session through a real gateway process, over HTTP/2 and HTTP/1.1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.h2_client import RawH2Client
from tests.conftest import create_session, deploy, make_client, send_message
from tests.gateway_process import GatewayProcess, bridge_pids, kill_bridge, turn_with_bridge_killed
from tests.sse_client import reply_text


@pytest.mark.parametrize("protocol", ["h2", "http1.1"])
def test_deploy_create_converse_pause_resume_cold_resume_and_end(
    gateway: GatewayProcess, agent_folder: Path, protocol: str
) -> None:
    with make_client(gateway, protocol) as client:
        agent = deploy(client, "echo", agent_folder)
        assert agent["version"] == 1

        created = client.post("/api/sessions", json={"agent": "echo"})
        assert created.status_code == 201
        expected_version = "HTTP/2" if protocol == "h2" else "HTTP/1.1"
        assert created.http_version == expected_version
        session = created.json()["session"]
        assert session["status"] == "active"
        sid = session["id"]

        first = send_message(client, sid, "my name is Ada")
        assert [e.event for e in first][-4:] == ["message", "turn_complete", "message", "done"]
        assert [e.event for e in first][:2] == ["session_start", "text_delta"]
        assert [e.id for e in first] == list(range(1, len(first) + 1))
        assert "my name is Ada" in reply_text(first)
        assert first[-4].data["message"]["content"][0]["text"] == reply_text(first)

        second = send_message(client, sid, "what is my name?")
        assert second[0].id == first[-1].id + 1
        assert "my name is Ada" in reply_text(second)

        paused = client.post(f"/api/sessions/{sid}/pause").json()["session"]
        assert paused["status"] == "paused"
        assert client.post(f"/api/sessions/{sid}/messages",
                           json={"content": "hello?"}).status_code == 409

        pid_before = bridge_pids(sid)
        warm = client.post(f"/api/sessions/{sid}/resume").json()["session"]
        assert warm["status"] == "active"
        assert bridge_pids(sid) == pid_before

        kill_bridge(sid)
        cold = client.post(f"/api/sessions/{sid}/resume")
        assert cold.status_code == 200, cold.text
        assert cold.json()["session"]["status"] == "active"
        assert bridge_pids(sid) not in ([], pid_before)

        third = send_message(client, sid, "and now?")
        assert "my name is Ada" in reply_text(third)
        assert "what is my name?" in reply_text(third)

        history = client.get(f"/api/sessions/{sid}/stream/events").json()["events"]
        assert [e["id"] for e in history] == list(range(1, third[-1].id + 1))
        assert [e["type"] for e in history][-1] == "done"

        ended = client.delete(f"/api/sessions/{sid}")
        assert ended.status_code == 200
        assert ended.json()["session"]["status"] == "ended"
        assert bridge_pids(sid) == []
        for method, path in [("POST", f"/api/sessions/{sid}/messages"),
                             ("POST", f"/api/sessions/{sid}/resume"),
                             ("POST", f"/api/sessions/{sid}/pause")]:
            gone = client.request(method, path, json={"content": "x"})
            assert gone.status_code == 410
            assert gone.json() == {"error": f"session {sid} has ended", "statusCode": 410}


def test_history_after_returns_only_later_events(client, session) -> None:
    events = send_message(client, session["id"], "hi")
    later = client.get(f"/api/sessions/{session['id']}/stream/events", params={"after": 2}).json()
    assert [e["id"] for e in later["events"]] == [e.id for e in events[2:]]
    assert later["events"][-1]["data"] == events[-1].data


def test_message_to_session_whose_sandbox_died_restores_it_transparently(
    client, session
) -> None:
    send_message(client, session["id"], "remember banana")
    kill_bridge(session["id"])
    events = send_message(client, session["id"], "what fruit?")
    assert "remember banana" in reply_text(events)


def test_sandbox_killed_mid_turn_sends_error_then_done_and_pauses_session(
    client, session
) -> None:
    sid = session["id"]
    events = turn_with_bridge_killed(client, sid)
    assert [e.event for e in events][-2:] == ["error", "done"]
    assert "sandbox exited" in events[-2].data["error"]
    state = client.get(f"/api/sessions/{sid}").json()["session"]
    assert state["status"] == "paused"
    resumed = client.post(f"/api/sessions/{sid}/resume")
    assert resumed.json()["session"]["status"] == "active"


def test_second_session_has_its_own_memory(client, session) -> None:
    send_message(client, session["id"], "secret word is kiwi")
    other = create_session(client, "echo")
    events = send_message(client, other["id"], "hello")
    assert "kiwi" not in reply_text(events)


def test_restart_pauses_sessions_and_resume_restores_memory(
    tmp_path: Path, agent_folder: Path
) -> None:
    gw = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gw) as client:
            deploy(client, "echo", agent_folder)
            sid = create_session(client, "echo")["id"]
            send_message(client, sid, "the colour is teal")
    finally:
        gw.stop()
    assert bridge_pids(sid) == []

    gw = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gw) as client:
            state = client.get(f"/api/sessions/{sid}").json()["session"]
            assert state["status"] == "paused"
            history = client.get(f"/api/sessions/{sid}/stream/events").json()["events"]
            assert history[-1]["type"] == "done"
            assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
            events = send_message(client, sid, "which colour?")
            assert "the colour is teal" in reply_text(events)
            assert events[0].id == history[-1]["id"] + 1
    finally:
        gw.stop()


def test_turn_runs_to_done_and_is_logged_when_the_client_resets_its_stream(
    client, session, gateway: GatewayProcess
) -> None:
    sid = session["id"]
    raw = RawH2Client(gateway.url)
    try:
        stream = raw.request(
            "POST", f"/api/sessions/{sid}/messages",
            headers=[("authorization", f"Bearer {gateway.api_key}"),
                     ("content-type", "application/json")],
            body=b'{"content": "long one", "options": {"tokenIntervalMs": 30, "tokens": 20}}',
        )
        while not raw.streams[stream].body:
            raw.pump()
        raw.conn.reset_stream(stream)
        raw.pump_out()
    finally:
        raw.close()
    deadline = time.monotonic() + 10
    while (history := client.get(f"/api/sessions/{sid}/stream/events").json()["events"]) and (
        history[-1]["type"] != "done"
    ):
        assert time.monotonic() < deadline, "turn did not finish after the client left"
        time.sleep(0.05)
    assert [e["type"] for e in history].count("text_delta") == 20
    follow_up = send_message(client, sid, "still there?")
    assert follow_up[0].id == history[-1]["id"] + 1
    assert "long one" in reply_text(follow_up)
