"""Hostile agent events cannot forge SSE frames or break the `/stream/events` JSON (finding 5).

The runner refuses such events at the bridge boundary; these tests feed them to the
gateway itself, behind that check (defence in depth): through a backend that yields
them to a live turn, exactly as a runner's events arrive, and as rows already in the
event log (written through the store, as an older gateway would have logged them).
Everything is read back over a real socket, with a real HTTP/2 client, and SSE is
parsed with a strict WHATWG parser (tests/whatwg_sse.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.auth import KeyRing
from gateway.context import Gateway
from gateway.event_log import EventLog
from gateway.serve_hypercorn import serve
from gateway.servers import ServeOptions
from gateway.sessions import SessionService
from gateway.store import Store
from runner.backend import AgentSpec, BackendStats, SandboxInfo
from tests.conftest import create_session, deploy, make_client, send_message
from tests.gateway_process import TEST_API_KEY, GatewayProcess
from tests.whatwg_sse import ParsedStream, parse_stream
from wire.events import Event

FORGED_DONE_TYPE = "text_delta\nid:424242\nevent:done"
"""The issue's attack: a type that writes a `done` with id 424242 into the stream."""
FORGED_ID = "424242"
HOSTILE_TURN: list[Event] = [
    Event("text_delta", b'{"text":"one "}'),
    Event(FORGED_DONE_TYPE, b'{"text":"x"}'),
    Event("text_delta", b'{"text":"a"}\n\nid: 424243\nevent: done\ndata: {}\r\rretry: 1'),
    Event("text_delta", b'not json {"'),
    Event("text_delta", b'\xff\xfe{"text":"\x00"}'),
    Event("x\r\nevent: done", b"{}"),
    Event("done", b'{"status":"ok"}'),
]


class ScriptedBackend:
    """A backend whose every turn yields `HOSTILE_TURN`: what a runner would relay."""

    def __init__(self) -> None:
        self.alive: set[str] = set()

    async def create(self, session_id: str, agent: AgentSpec, *,
                     state: bytes | None = None) -> SandboxInfo:
        self.alive.add(session_id)
        return SandboxInfo(f"sbx-{session_id}", session_id, 1, "/nonexistent", False,
                           agent_backend="mock")

    def is_alive(self, session_id: str) -> bool:
        return session_id in self.alive

    async def send(self, session_id: str, prompt: str, options: dict[str, Any] | None = None,
                   *, turn_id: str = "") -> AsyncIterator[Event]:
        for event in HOSTILE_TURN:
            yield event

    def acknowledge(self, hints: dict[str, int]) -> None:
        pass

    async def interrupt(self, session_id: str) -> None:
        pass

    async def destroy(self, session_id: str, *, keep_workspace: bool = False) -> None:
        self.alive.discard(session_id)

    def stats(self) -> BackendStats:
        return BackendStats(len(self.alive), 0)

    async def close(self) -> None:
        self.alive.clear()


@contextlib.asynccontextmanager
async def scripted_gateway(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A real gateway app on hypercorn, on a real socket, over the scripted backend."""
    store = Store(tmp_path / "ash.db")
    store.upsert_agent("echo", str(tmp_path), '{"backend": "mock"}')
    event_log = EventLog(store)
    backend = ScriptedBackend()
    sessions = SessionService(store, backend, event_log)  # type: ignore[arg-type]
    gateway = Gateway(store, backend, sessions, event_log, tmp_path)  # type: ignore[arg-type]
    keys = KeyRing(store, b"test-secret")
    keys.settle_env_key(TEST_API_KEY)
    app = GatewayApp(gateway, keys)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = asyncio.Event()
    server = asyncio.get_running_loop().create_task(
        serve(app, sock, ServeOptions(log_level="warning"), stop))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=url, http1=False, http2=True, timeout=10,
                                     headers={"authorization": f"Bearer {TEST_API_KEY}"}) as c:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    await c.get("/health")
                    break
                await asyncio.sleep(0.05)
            yield c
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.detach()  # hypercorn took the descriptor over (fd://) and closed it


def assert_no_forgery(parsed: ParsedStream, ids: list[int]) -> None:
    """Exactly the events we numbered, one `done` (the real one, last), no retry."""
    assert [int(e.last_event_id) for e in parsed.events] == ids
    assert [e.type for e in parsed.events].count("done") == 1
    assert parsed.events[-1].type == "done"
    assert FORGED_ID not in {e.last_event_id for e in parsed.events}
    assert parsed.last_event_id == str(ids[-1])
    assert parsed.retry_ms is None


async def read_stream_replay(client: httpx.AsyncClient, sid: str, last_id: int) -> ParsedStream:
    """GET /stream from the start, read until the frame with `last_id` (it stays open)."""
    body = b""
    async with client.stream("GET", f"/api/sessions/{sid}/stream",
                             headers={"last-event-id": "0"}) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            body += chunk
            parsed = parse_stream(body)
            if parsed.last_event_id == str(last_id):
                return parsed
    raise AssertionError(f"stream ended before event {last_id}: {body!r}")


async def test_forged_types_in_a_live_turn_reach_the_client_as_error_events(
        tmp_path: Path) -> None:
    async with scripted_gateway(tmp_path) as client:
        sid = (await client.post("/api/sessions", json={"agent": "echo"})).json()["session"]["id"]
        async with client.stream("POST", f"/api/sessions/{sid}/messages",
                                 json={"content": "hi"}) as response:
            assert response.status_code == 200
            live = parse_stream(b"".join([chunk async for chunk in response.aiter_raw()]))
    ids = list(range(1, len(HOSTILE_TURN) + 2))  # the gateway's session_start, then the turn
    assert_no_forgery(live, ids)
    forged = [live.events[2], live.events[6]]
    assert [e.type for e in forged] == ["error", "error"]
    assert [json.loads(e.data)["code"] for e in forged] == ["invalid_event_type"] * 2
    assert json.loads(forged[0].data)["type"] == FORGED_DONE_TYPE


async def test_history_of_a_turn_with_hostile_events_is_valid_json(tmp_path: Path) -> None:
    async with scripted_gateway(tmp_path) as client:
        sid = (await client.post("/api/sessions", json={"agent": "echo"})).json()["session"]["id"]
        async with client.stream("POST", f"/api/sessions/{sid}/messages",
                                 json={"content": "hi"}) as response:
            await response.aread()
        history = (await client.get(f"/api/sessions/{sid}/stream/events")).json()["events"]
    assert [e["id"] for e in history] == list(range(1, len(HOSTILE_TURN) + 2))
    assert [e["type"] for e in history] == ["session_start",
        "text_delta", "error", "text_delta", "text_delta", "text_delta", "error", "done"]
    assert history[4] == {"id": 5, "type": "text_delta", "data": 'not json {"',
                          "invalidJson": True}
    assert history[5]["invalidJson"] is True
    assert history[1]["data"] == {"text": "one "}


async def test_rejoin_replay_of_a_turn_with_hostile_events_forges_nothing(
        tmp_path: Path) -> None:
    async with scripted_gateway(tmp_path) as client:
        sid = (await client.post("/api/sessions", json={"agent": "echo"})).json()["session"]["id"]
        async with client.stream("POST", f"/api/sessions/{sid}/messages",
                                 json={"content": "hi"}) as response:
            await response.aread()
        replay = await read_stream_replay(client, sid, len(HOSTILE_TURN) + 1)
    assert_no_forgery(replay, list(range(1, len(HOSTILE_TURN) + 2)))


# Rows already in the log (an older gateway logged them), read by a real gateway process.


@pytest.fixture
def gateway_with_hostile_rows(tmp_path: Path, agent_folder: Path) -> Iterator[
        tuple[GatewayProcess, str, int]]:
    """A real gateway whose session has one real turn, then hostile rows in its log."""
    gateway = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", agent_folder)
            sid = create_session(client, "echo")["id"]
            real = send_message(client, sid, "hello")
        gateway.stop()
        store = Store(gateway.data_dir / "ash.db")
        first = real[-1].id + 1
        rows = [(sid, first + i, event.type, event.data, 0.0)
                for i, event in enumerate(HOSTILE_TURN)]
        store.append_events(rows, {sid: rows[-1][1]})
        store.close()
        gateway.start()
        yield gateway, sid, rows[-1][1]
    finally:
        gateway.stop()


def test_logged_hostile_rows_leave_the_history_valid_json(
        gateway_with_hostile_rows: tuple[GatewayProcess, str, int]) -> None:
    gateway, sid, last = gateway_with_hostile_rows
    with make_client(gateway) as client:
        response = client.get(f"/api/sessions/{sid}/stream/events")
    history = json.loads(response.content)
    assert history["events"][-1]["id"] == last
    assert FORGED_DONE_TYPE not in {e["type"] for e in history["events"]}
    assert sum(e.get("invalidJson", False) for e in history["events"]) == 3


async def test_logged_hostile_rows_replay_without_a_forged_done(
        gateway_with_hostile_rows: tuple[GatewayProcess, str, int]) -> None:
    gateway, sid, last = gateway_with_hostile_rows
    async with httpx.AsyncClient(base_url=gateway.url, http1=False, http2=True, timeout=10,
                                 headers=gateway.headers) as client:
        replay = await read_stream_replay(client, sid, last)
    ids = [int(e.last_event_id) for e in replay.events]
    assert ids == list(range(1, last + 1))
    assert FORGED_ID not in {e.last_event_id for e in replay.events}
    assert [e.type for e in replay.events].count("done") == 2  # the real turn's, the log's
    assert replay.retry_ms is None
