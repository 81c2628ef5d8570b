"""A session's history when the sandbox is the attacker: a real gateway whose bubblewrap
sandboxes run the hostile bridge (tests/hostile_bridge.py). What it writes to its stderr
reaches `GET …/logs` bounded and decoded; what it breaks shows in the timeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.bridge_log import LINE_CAP
from tests.conftest import send_message
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
