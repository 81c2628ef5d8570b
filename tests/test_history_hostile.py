"""A session's history when the sandbox is the attacker: a real gateway whose bubblewrap
sandboxes run the hostile bridge (tests/hostile_bridge.py). What it writes to its stderr
reaches `GET …/logs` bounded and decoded; what it breaks shows in the timeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.store import Store
from runner.bridge_log import LINE_CAP
from tests.conftest import create_session, deploy, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import new_session, running_gateway


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("hostile-history") / "data",
                         module="tests.hostile_gateway") as process:
        yield process


@pytest.fixture(scope="module")
def hostile_client(hostile: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile.url, http2=True, http1=False, headers=hostile.headers,
                      timeout=60) as c:
        yield c


def logs_of(client: httpx.Client, sid: str) -> list[dict]:
    response = client.get(f"/api/sessions/{sid}/logs")
    assert response.status_code == 200, response.text
    return response.json()["logs"]


def test_bytes_that_are_not_utf8_read_back_replaced(hostile_client, tmp_path: Path) -> None:
    sid = new_session(hostile_client, tmp_path, "bytes")
    send_message(hostile_client, sid, r"stderr bad-\xff-byte\n")
    assert logs_of(hostile_client, sid)[-1]["text"] == "bad-\ufffd-byte"


def test_a_long_line_is_cut(hostile_client, tmp_path: Path) -> None:
    sid = new_session(hostile_client, tmp_path, "long")
    send_message(hostile_client, sid, "stderr " + "x" * (3 * LINE_CAP) + r"\nafter\n")
    texts = [line["text"] for line in logs_of(hostile_client, sid)]
    assert texts[-2:] == ["x" * LINE_CAP, "after"]


def test_a_line_without_its_newline_waits_for_it(hostile_client, tmp_path: Path) -> None:
    sid = new_session(hostile_client, tmp_path, "partial")
    send_message(hostile_client, sid, r"stderr whole\nhalf-")
    assert logs_of(hostile_client, sid)[-1]["text"] == "whole"
    send_message(hostile_client, sid, r"stderr done\n")
    assert logs_of(hostile_client, sid)[-1]["text"] == "half-done"


def test_control_characters_stay_inside_the_json_text(hostile_client, tmp_path: Path) -> None:
    sid = new_session(hostile_client, tmp_path, "controls")
    send_message(hostile_client, sid, r'stderr "},{"index":0,\x1b[2J\r\x00end\n')
    assert logs_of(hostile_client, sid)[-1]["text"] == '"},{"index":0,\x1b[2J\r\x00end'


def test_a_protocol_violation_is_an_error_in_the_timeline(hostile_client,
                                                          tmp_path: Path) -> None:
    sid = new_session(hostile_client, tmp_path, "violation")
    send_message(hostile_client, sid, "invalid-json")
    response = hostile_client.get(f"/api/sessions/{sid}/events", params={"type": "error"})
    assert response.status_code == 200, response.text
    errors = [json.loads(event["data"]) for event in response.json()["events"]]
    assert [error["code"] for error in errors] == ["bridge_protocol_violation"]


LOGGED_GARBAGE = [
    ("message", b'not json {"'),
    ("message", b"[1, 2]"),
    ("message", b'{"type": "assistant", "message": {"content": "not a list"}}'),
    ("message", b'{"type": "assistant", "message": {"content": [7, {"type": "text"}]}}'),
    ("message", b'{"type": "user", "tool_use_result": "no"}'),
    ("message", b'\xff\xfe{"type":"result"}'),
    ("error", b'"just a string"'),
    ("done", b"null"),
]
"""Rows an older gateway or a forged runner may have logged: none breaks the history."""


def test_logged_garbage_leaves_messages_and_timeline_well_formed(
        tmp_path: Path, agent_folder: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", agent_folder)
            sid = create_session(client, "echo")["id"]
            real = send_message(client, sid, "hello")
        gateway.stop()
        store = Store(gateway.data_dir / "ash.db")
        rows = [(sid, real[-1].id + 1 + i, kind, data, 0.0)
                for i, (kind, data) in enumerate(LOGGED_GARBAGE)]
        store.append_events(rows, {sid: rows[-1][1]})
        store.close()
        gateway.start()
        with make_client(gateway) as client:
            messages = client.get(f"/api/sessions/{sid}/messages").json()["messages"]
            timeline = client.get(f"/api/sessions/{sid}/events").json()["events"]
    finally:
        gateway.stop()
    assert [m["role"] for m in messages] == ["user"] + ["assistant"] * 4
    assert [json.loads(m["content"])["type"] for m in messages[3:]] == ["assistant"] * 2
    garbage = [e for e in timeline if e["sequence"] > real[-1].id * 1000]
    assert [(e["type"], json.loads(e["data"])) for e in garbage] == [
        ("text", {"text": None}),
        ("error", {}),
        ("lifecycle", {"action": "turn_ended", "status": None}),
    ]
