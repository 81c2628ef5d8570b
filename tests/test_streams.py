"""Streams that never lose an event: rejoin, turns that outlive clients, flow control.

Raw h2 clients (tests/h2_raw.py) control the HTTP/2 window directly.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.h2_client import RawH2Client
from tests.conftest import create_session, deploy, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.sse_client import SseEvent, parse_sse


def auth(gateway: GatewayProcess) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {gateway.api_key}"), ("content-type", "application/json")]


def message_body(content: str, **options: object) -> bytes:
    return json.dumps({"content": content, "options": options}).encode()


def complete_frames(body: bytes | bytearray) -> list[SseEvent]:
    """The whole SSE frames in `body` (a trailing partial frame is left out)."""
    cut = bytes(body).rfind(b"\n\n")
    return parse_sse([bytes(body)[: cut + 2]]) if cut >= 0 else []


@dataclass
class HeldTurn:
    gateway: GatewayProcess
    client: httpx.Client
    raw: RawH2Client
    sid: str
    stream: int
    """The raw client's stream of the turn, its window held at zero."""


@contextlib.contextmanager
def held_turn(tmp_path: Path, agent_folder: Path, server_args: list[str],
              write_timeout: float, tokens: int = 20_000) -> Iterator[HeldTurn]:
    """A gateway with `--write-timeout`, and a turn whose reader never returns window."""
    gateway = GatewayProcess(tmp_path / "data", extra_args=[
        *server_args, "--write-timeout", f"{write_timeout:g}"]).start()
    raw = RawH2Client(gateway.url, timeout=30)
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", agent_folder)
            sid = create_session(client, "echo")["id"]
            stream = raw.request("POST", f"/api/sessions/{sid}/messages", headers=auth(gateway),
                                 body=message_body("big", tokens=tokens), auto_ack=False)
            yield HeldTurn(gateway, client, raw, sid, stream)
    finally:
        raw.close()
        gateway.stop()


def history(client: httpx.Client, sid: str) -> list[dict]:
    """The whole persisted history, page by page."""
    events: list[dict] = []
    while page := client.get(f"/api/sessions/{sid}/stream/events", params={
            "limit": 10000, "after": events[-1]["id"] if events else 0}).json()["events"]:
        events.extend(page)
    return events


def wait_for_done(client: httpx.Client, sid: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = history(client, sid)
        if events and events[-1]["type"] == "done":
            return events
        assert time.monotonic() < deadline, f"turn of {sid} did not finish"
        time.sleep(0.05)


def logged_count(client: httpx.Client, sid: str) -> int:
    return client.get(f"/api/sessions/{sid}").json()["session"]["lastEventId"]


def plateau(client: httpx.Client, sid: str, settle: float = 0.7, within: float = 15) -> int:
    """Wait until the session's logged event count stops moving; returns it.

    Fails if it keeps growing for `within` seconds: the agent was not paused.
    """
    deadline = time.monotonic() + within
    last = logged_count(client, sid)
    while True:
        time.sleep(settle)
        now = logged_count(client, sid)
        if now == last:
            return now
        assert time.monotonic() < deadline, f"agent kept producing for a held reader ({now})"
        last = now


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_stream_until(client: httpx.Client, sid: str, headers: dict[str, str],
                      done_count: int) -> list[SseEvent]:
    """Read GET /stream until `done_count` `done` events arrived."""
    seen: list[SseEvent] = []
    buffer = b""
    with client.stream("GET", f"/api/sessions/{sid}/stream", headers=headers) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            buffer += chunk
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue
            seen.extend(parse_sse([buffer[: cut + 2]]))
            buffer = buffer[cut + 2:]
            if sum(e.event == "done" for e in seen) >= done_count:
                return seen
    raise AssertionError("stream ended early")


def test_rejoin_with_last_event_id_reads_every_event_exactly_once(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    sid = session["id"]
    raw = RawH2Client(gateway.url)
    try:
        stream = raw.request("POST", f"/api/sessions/{sid}/messages", headers=auth(gateway),
                             body=message_body("tell me a long story", tokens=60,
                                               tokenIntervalMs=10))
        while len(complete_frames(raw.streams[stream].body)) < 10:
            raw.pump()
        first_part = complete_frames(raw.streams[stream].body)
    finally:
        raw.close()
    rest = read_stream_until(client, sid, {"last-event-id": str(first_part[-1].id)}, 1)
    union = [(e.id, e.event, e.data) for e in first_part + rest]
    logged = [(e["id"], e["type"], e["data"]) for e in wait_for_done(client, sid)]
    assert union == logged


def test_stream_stays_open_across_turns_without_gap_or_duplicate(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    sid = session["id"]
    send_message(client, sid, "first")
    collected: list[SseEvent] = []

    def reader() -> None:
        with make_client(gateway) as own:
            collected.extend(read_stream_until(own, sid, {"last-event-id": "3"}, 3))

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    send_message(client, sid, "second", options={"tokenIntervalMs": 5})
    send_message(client, sid, "third")
    thread.join(30)
    assert not thread.is_alive()
    logged = history(client, sid)
    assert [e.id for e in collected] == [e["id"] for e in logged if e["id"] > 3]
    assert [e.event for e in collected].count("done") == 3


def test_stream_after_query_parameter_replays_from_that_id(client, session) -> None:
    events = send_message(client, session["id"], "hello")
    replayed = read_stream_until(client, f"{session['id']}", {}, 1)
    assert [e.id for e in replayed] == [e.id for e in events]
    with client.stream("GET", f"/api/sessions/{session['id']}/stream",
                       params={"after": events[-2].id}) as response:
        chunk = next(response.iter_raw())
    assert parse_sse([chunk])[0].id == events[-1].id


def test_stream_with_bad_last_event_id_is_400(client, session) -> None:
    response = client.get(f"/api/sessions/{session['id']}/stream",
                          headers={"last-event-id": "abc"})
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["error"]


def test_rejoin_works_across_a_gateway_restart(tmp_path: Path, agent_folder: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", agent_folder)
            sid = create_session(client, "echo")["id"]
            first = send_message(client, sid, "before the restart")
            raw = RawH2Client(gateway.url)
            stream = raw.request("POST", f"/api/sessions/{sid}/messages", headers=auth(gateway),
                                 body=message_body("interrupted by restart", tokens=400,
                                                   tokenIntervalMs=5))
            while len(complete_frames(raw.streams[stream].body)) < 5:
                raw.pump()
            seen = first + complete_frames(raw.streams[stream].body)
    finally:
        gateway.stop()
        raw.close()
    gateway = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gateway) as client:
            logged = history(client, sid)
            assert logged[-1]["type"] == "done"
            rest: list[SseEvent] = []
            if logged[-1]["id"] > seen[-1].id:
                with client.stream("GET", f"/api/sessions/{sid}/stream",
                                   headers={"last-event-id": str(seen[-1].id)}) as response:
                    buffer = b""
                    for chunk in response.iter_raw():
                        buffer += chunk
                        if b"event: done" in buffer and buffer.endswith(b"\n\n"):
                            break
                rest = parse_sse([buffer])
            union = [(e.id, e.event) for e in seen + rest]
            assert union == [(e["id"], e["type"]) for e in logged]
            client.post(f"/api/sessions/{sid}/resume")
            after = send_message(client, sid, "after the restart")
            assert after[0].id == logged[-1]["id"] + 1
    finally:
        gateway.stop()


def test_held_reader_pauses_its_session_with_bounded_memory_while_another_streams(
    gateway: GatewayProcess, client: httpx.Client, agent_folder: Path
) -> None:
    deploy(client, "echo", agent_folder)
    slow = create_session(client, "echo")["id"]
    fast = create_session(client, "echo")["id"]
    raw = RawH2Client(gateway.url, timeout=60)
    try:
        held = raw.request("POST", f"/api/sessions/{slow}/messages", headers=auth(gateway),
                           body=message_body("flood", tokens=100_000), auto_ack=False)
        raw.pump_for(1.0)
        baseline_rss = rss_kib(gateway.process.pid)
        paused_at = logged_count(client, slow)
        raw.pump_for(1.0)
        assert logged_count(client, slow) == paused_at, "agent kept producing for a held reader"
        assert paused_at < 5_000

        other = raw.request("POST", f"/api/sessions/{fast}/messages", headers=auth(gateway),
                            body=message_body("meanwhile", tokens=2000))
        started = time.monotonic()
        result = raw.wait_response(other)
        assert time.monotonic() - started < 10
        assert complete_frames(result.body)[-1].event == "done"
        assert raw.streams[held].ended is False
        growth_kib = rss_kib(gateway.process.pid) - baseline_rss
        assert growth_kib < 20 * 1024, f"gateway RSS grew {growth_kib} KiB while a reader held"

        raw.open_window(held)
        everything = raw.wait_response(held)
        events = complete_frames(everything.body)
        assert sum(e.event == "text_delta" for e in events) == 100_000
        assert events[-1].event == "done"
        assert [e.id for e in events] == list(range(1, len(events) + 1))
    finally:
        raw.close()


def test_reader_that_stops_is_cut_after_the_write_timeout_and_the_turn_completes(
    tmp_path: Path, agent_folder: Path, server_args: list[str]
) -> None:
    with held_turn(tmp_path, agent_folder, server_args, write_timeout=1) as turn:
        deadline = time.monotonic() + 15
        while not turn.raw.streams[turn.stream].reset:
            assert time.monotonic() < deadline, "the stalled reader was never cut"
            turn.raw.pump_for(0.2)
        logged = wait_for_done(turn.client, turn.sid)
        assert sum(e["type"] == "text_delta" for e in logged) == 20_000
        replay = read_stream_until(turn.client, turn.sid, {}, 1)
        assert len(replay) == len(logged)


def test_vanished_client_does_not_leave_the_turn_stuck(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    sid = session["id"]
    raw = RawH2Client(gateway.url)
    held = raw.request("POST", f"/api/sessions/{sid}/messages", headers=auth(gateway),
                       body=message_body("big", tokens=20_000), auto_ack=False)
    raw.pump_for(0.5)
    raw.sock.close()  # no GOAWAY, no RST_STREAM: the client is simply gone
    started = time.monotonic()
    logged = wait_for_done(client, sid, timeout=20)
    assert time.monotonic() - started < 20
    assert sum(e["type"] == "text_delta" for e in logged) == 20_000
    assert raw.streams[held].ended is False


def test_reset_of_a_held_stream_releases_the_pending_write_at_once(
    tmp_path: Path, agent_folder: Path, server_args: list[str]
) -> None:
    """RST_STREAM on a stream whose window is at zero wakes the gateway's blocked write.

    A write left waiting would be cut only by the write timeout, which logs it.
    """
    with held_turn(tmp_path, agent_folder, server_args, write_timeout=3) as turn:
        turn.raw.pump_for(0.5)
        assert logged_count(turn.client, turn.sid) < 20_000, "the reader did not hold the turn"
        turn.raw.conn.reset_stream(turn.stream)
        turn.raw.pump_out()
        logged = wait_for_done(turn.client, turn.sid)
        assert sum(e["type"] == "text_delta" for e in logged) == 20_000
        time.sleep(4)  # past the write timeout
        health = turn.raw.request("GET", "/health")
        assert turn.raw.wait_response(health).status == 200
    log = turn.gateway.stderr_path.read_text()
    assert "cut a reader" not in log, "the write stayed blocked until the write timeout"
    assert "unhandled error" not in log


def test_on_disconnect_interrupt_stops_the_turn_when_the_client_leaves(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    sid = session["id"]
    raw = RawH2Client(gateway.url)
    body = b'{"content": "long", "onDisconnect": "interrupt", ' \
           b'"options": {"tokens": 500, "tokenIntervalMs": 10}}'
    stream = raw.request("POST", f"/api/sessions/{sid}/messages", headers=auth(gateway),
                         body=body)
    while not complete_frames(raw.streams[stream].body):
        raw.pump()
    raw.conn.reset_stream(stream)
    raw.pump_out()
    raw.close()
    logged = wait_for_done(client, sid)
    assert logged[-1]["data"]["status"] == "interrupted"
    assert sum(e["type"] == "text_delta" for e in logged) < 500


def test_bad_on_disconnect_value_is_400(client, session) -> None:
    response = client.post(f"/api/sessions/{session['id']}/messages",
                           json={"content": "x", "onDisconnect": "explode"})
    assert response.status_code == 400
    assert "onDisconnect" in response.json()["error"]


def test_http1_reader_gets_tcp_backpressure_then_everything(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    sid = session["id"]
    # A fixed receive buffer turns off the kernel's autotuning (up to 32 MiB here),
    # so what the reader does not read soon stops the gateway's writes.
    small_window = httpx.HTTPTransport(
        http1=True, socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)]
    )
    with httpx.Client(base_url=gateway.url, transport=small_window, headers=gateway.headers,
                      timeout=60) as reader, reader.stream(
        "POST", f"/api/sessions/{sid}/messages",
        json={"content": "flood", "options": {"tokens": 100_000}},
    ) as response:
        assert response.http_version == "HTTP/1.1"
        assert response.headers.get("transfer-encoding") == "chunked"
        chunks = response.iter_raw()
        head = next(chunks)
        paused_at = plateau(client, sid)
        assert paused_at < 100_000
        events = parse_sse([head, *chunks])
    assert sum(e.event == "text_delta" for e in events) == 100_000
    assert events[-1].event == "done"


def test_after_a_gateway_crash_no_event_id_a_client_saw_is_used_again(
    tmp_path: Path, agent_folder: Path
) -> None:
    gateway = GatewayProcess(tmp_path / "data").start()
    raw: RawH2Client | None = None
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", agent_folder)
            sid = create_session(client, "echo")["id"]
        raw = RawH2Client(gateway.url)
        stream = raw.request("POST", f"/api/sessions/{sid}/messages", headers=auth(gateway),
                             body=message_body("crash me", tokens=2000, tokenIntervalMs=2))
        while len(complete_frames(raw.streams[stream].body)) < 20:
            raw.pump()
        seen = complete_frames(raw.streams[stream].body)
    finally:
        gateway.stop(signal.SIGKILL)
        if raw is not None:
            raw.close()
    gateway = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gateway) as client:
            assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
            after = send_message(client, sid, "after the crash")
            assert after[0].id > seen[-1].id
            logged = history(client, sid)
            assert [e["id"] for e in logged] == sorted({e["id"] for e in logged})
    finally:
        gateway.stop()
