"""A turn outlives its gateway: in coordinator mode the runner keeps a turn running
when the gateway crashes or restarts, and the next gateway logs the rest of it, so a
client that rejoins with Last-Event-ID reads every event of the turn exactly once."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from bench.h2_client import RawH2Client
from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.split_cluster import Cluster, session_of
from tests.sse_client import SseEvent, reply_text
from tests.test_streams import auth, complete_frames, history, message_body, read_stream_until

TOKENS = 600


def start_long_turn(cluster: Cluster, sid: str, seen_before_crash: int) -> list[SseEvent]:
    """Send a slow turn over HTTP/2 and read its first events; returns what was read."""
    raw = RawH2Client(cluster.gateway.url)
    try:
        stream = raw.request("POST", f"/api/sessions/{sid}/messages",
                             headers=auth(cluster.gateway),
                             body=message_body("outlive the gateway", tokens=TOKENS,
                                               tokenIntervalMs=5))
        while len(complete_frames(raw.streams[stream].body)) < seen_before_crash:
            raw.pump()
        return complete_frames(raw.streams[stream].body)
    finally:
        raw.close()


def message_text(events: list[SseEvent]) -> str:
    [message] = [e for e in events if e.event == "message" and e.data["type"] == "assistant"]
    return "".join(block["text"] for block in message.data["message"]["content"])


def assert_read_exactly_once(union: list[SseEvent], logged: list[dict]) -> None:
    ids = [e.id for e in union]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "a gap or a duplicate id"
    assert [(e.id, e.event) for e in union] == [(e["id"], e["type"]) for e in logged
                                                  if e["id"] >= ids[0]]
    assert sum(e.event == "text_delta" for e in union) == TOKENS
    assert reply_text(union) == message_text(union)
    assert union[-1].event == "done"


def one_session(cluster: Cluster, root: Path) -> str:
    """Runner r1, the echo agent and a session on it; the session's id."""
    cluster.add_runners("r1")
    with cluster.client() as client:
        deploy(client, "echo", make_agent_folder(root))
        return create_session(client, "echo")["id"]


def restart(cluster: Cluster, sig: int) -> None:
    cluster.restart_gateway(sig)
    cluster.wait_for_runners("r1")


def rejoin(client: httpx.Client, sid: str, after: int) -> list[SseEvent]:
    return read_stream_until(client, sid, {"last-event-id": str(after)}, done_count=1)


def test_a_turn_running_on_its_runner_survives_a_gateway_crash_and_rejoin_reads_it_once(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path).start() as cluster:
        sid = one_session(cluster, tmp_path)
        with cluster.client() as client:
            send_message(client, sid, "a first, short turn")
        seen = start_long_turn(cluster, sid, seen_before_crash=30)

        restart(cluster, signal.SIGKILL)
        with cluster.client() as client:
            rest = rejoin(client, sid, seen[-1].id)
            union = seen + rest
            assert_read_exactly_once(union, history(client, sid))
            assert session_of(client, sid)["turns"] == 2
            after = send_message(client, sid, "and after it")
            assert after[0].id == union[-1].id + 1
            assert "outlive the gateway" in reply_text(after)
        runner = cluster.runners["r1"]
        assert runner.process is not None and runner.process.poll() is None


def test_a_turn_survives_a_clean_gateway_restart_too(tmp_path: Path) -> None:
    with Cluster(tmp_path).start() as cluster:
        sid = one_session(cluster, tmp_path)
        seen = start_long_turn(cluster, sid, seen_before_crash=10)

        restart(cluster, signal.SIGTERM)
        with cluster.client() as client:
            union = seen + rejoin(client, sid, seen[-1].id)
            assert_read_exactly_once(union, history(client, sid))


def test_a_message_sent_while_the_taken_over_turn_runs_is_409(tmp_path: Path) -> None:
    with Cluster(tmp_path).start() as cluster:
        sid = one_session(cluster, tmp_path)
        start_long_turn(cluster, sid, seen_before_crash=5)

        restart(cluster, signal.SIGKILL)
        with cluster.client() as client:
            response = client.post(f"/api/sessions/{sid}/messages",
                                   json={"content": "too early"})
            assert response.status_code == 409
            assert response.json()["statusCode"] == 409
            logged = rejoin(client, sid, 0)
            assert logged[-1].event == "done"
            assert client.post(f"/api/sessions/{sid}/messages",
                               json={"content": "now"}).status_code == 200
