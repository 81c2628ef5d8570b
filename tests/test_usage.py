"""Usage metering with the mock agent: each finished turn records what its `turn_complete`
reported (tokens), what the gateway saw (tool calls, one message) and measured (compute
seconds), durable by the time its `done` is out; `/api/usage`, `/api/usage/stats` and
`/api/analytics` filter it by session, agent and time, and refuse bad filters. (The Claude
backend's figures: tests/test_claude_backend.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.store import SessionRow, Store, UsageFilter
from gateway.usage import TurnMeter, reported_tokens
from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.sse_client import SseEvent
from wire import events


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("usage")
    process = GatewayProcess(root / "data").start()
    try:
        with make_client(process) as c:
            deploy(c, "alpha", make_agent_folder(root, "alpha"))
            deploy(c, "beta", make_agent_folder(root, "beta"))
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with make_client(gateway) as c:
        yield c


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stats(client: httpx.Client, **params: str) -> dict[str, Any]:
    response = client.get("/api/usage/stats", params=params)
    assert response.status_code == 200, response.text
    return response.json()["stats"]


def usage_events(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = client.get("/api/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def reported(turn: list[SseEvent]) -> dict[str, int]:
    [complete] = [e.data for e in turn if e.event == "turn_complete"]
    return complete["usage"]


def test_a_turn_records_what_its_turn_complete_reported(client: httpx.Client) -> None:
    sid = create_session(client, "alpha")["id"]
    turn = send_message(client, sid, "/bash echo metered")
    usage = reported(turn)
    figures = stats(client, sessionId=sid)
    assert figures["totalInputTokens"] == usage["input_tokens"] > 0
    assert figures["totalOutputTokens"] == usage["output_tokens"] > 0
    assert (figures["totalCacheCreationTokens"], figures["totalCacheReadTokens"]) == (0, 0)
    assert (figures["totalToolCalls"], figures["totalMessages"]) == (1, 1)
    assert 0 < figures["totalComputeSeconds"] < 30


def test_usage_events_name_their_session_agent_and_type(client: httpx.Client) -> None:
    sid = create_session(client, "alpha")["id"]
    usage = reported(send_message(client, sid, "count me"))
    rows = usage_events(client, sessionId=sid)
    by_type = {row["eventType"]: row["value"] for row in rows}
    assert by_type.keys() == {"input_tokens", "output_tokens", "message", "compute_seconds"}
    assert (by_type["input_tokens"], by_type["output_tokens"], by_type["message"]) == (
        usage["input_tokens"], usage["output_tokens"], 1)
    assert {(row["sessionId"], row["agentName"]) for row in rows} == {(sid, "alpha")}
    assert all(row["createdAt"].endswith("Z") for row in rows)


def test_turns_add_up_per_session_and_per_agent(client: httpx.Client) -> None:
    first = create_session(client, "beta")["id"]
    second = create_session(client, "beta")["id"]
    outputs = [reported(send_message(client, sid, text))["output_tokens"]
               for sid, text in ((first, "one"), (first, "two words"), (second, "three"))]
    assert stats(client, sessionId=first)["totalMessages"] == 2
    assert stats(client, sessionId=first)["totalOutputTokens"] == outputs[0] + outputs[1]
    assert stats(client, agentName="beta")["totalOutputTokens"] == sum(outputs)
    assert stats(client, agentName="nobody")["totalMessages"] == 0


def test_time_bounds_and_limit_pick_the_rows(client: httpx.Client) -> None:
    sid = create_session(client, "alpha")["id"]
    before_turn = datetime.now(UTC) - timedelta(seconds=1)
    send_message(client, sid, "in range")
    after_turn = datetime.now(UTC) + timedelta(seconds=1)
    assert stats(client, sessionId=sid, after=iso(before_turn),
                 before=iso(after_turn))["totalMessages"] == 1
    assert stats(client, sessionId=sid, after=iso(after_turn))["totalMessages"] == 0
    assert stats(client, sessionId=sid, before=iso(before_turn))["totalMessages"] == 0
    assert usage_events(client, sessionId=sid, after=iso(after_turn)) == []
    assert len(usage_events(client, sessionId=sid, limit="2")) == 2
    assert len(usage_events(client, sessionId=sid)) == 4


def test_analytics_counts_agents_sessions_and_usage(client: httpx.Client) -> None:
    sid = create_session(client, "alpha")["id"]
    send_message(client, sid, "for analytics")
    response = client.get("/api/analytics")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agents"]["total"] == 2
    assert body["sessions"]["total"] == sum(body["sessions"]["byStatus"].values()) >= 1
    assert body["usage"] == stats(client)
    assert body["evals"] == {"totalRuns": 0, "byStatus": {}}
    future = iso(datetime.now(UTC) + timedelta(days=1))
    assert client.get("/api/analytics", params={"after": future}).json()["usage"][
        "totalMessages"] == 0


@pytest.mark.parametrize("path", ["/api/usage", "/api/usage/stats", "/api/analytics"])
@pytest.mark.parametrize("params", [
    {"after": "yesterday"}, {"before": "2026-13-01T00:00:00Z"}, {"after": ""},
    {"before": "2026-01-01T00:00:00Z" + "0" * 64}, {"after": "1700000000"},
])
def test_a_bad_time_is_400(client: httpx.Client, path: str, params: dict[str, str]) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert "ISO-8601" in response.json()["error"]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"},
                                    {"limit": "-1"}, {"sessionId": ""}, {"agentName": ""},
                                    {"agentName": "x" * 257}])
def test_bad_limits_and_filters_are_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/api/usage", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["statusCode"] == 400


def test_a_date_without_time_or_offset_is_read_as_utc(client: httpx.Client) -> None:
    assert client.get("/api/usage", params={"after": "2000-01-01"}).status_code == 200
    assert client.get("/api/usage/stats",
                      params={"before": "2000-01-01T00:00:00"}).json()["stats"][
        "totalMessages"] == 0


# the meter, alone: the bridge's figures are hostile


def complete(usage: Any) -> events.Event:
    return events.Event(events.TURN_COMPLETE, orjson.dumps({"usage": usage}))


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"usage": 5}', b"{}"])
def test_a_turn_complete_without_usable_usage_reports_no_tokens(payload: bytes) -> None:
    assert reported_tokens(payload) == {}


def test_only_plausible_integer_figures_are_taken() -> None:
    assert reported_tokens(complete({
        "input_tokens": 7, "output_tokens": True, "cache_creation_input_tokens": -1,
        "cache_read_input_tokens": 10**15}).data) == {"input_tokens": 7}
    assert reported_tokens(complete({"input_tokens": 1.5, "output_tokens": "9"}).data) == {}


def row(session_id: str = "s1") -> SessionRow:
    return SessionRow(session_id, "agent", 1, "active", None, None, 0, 0, None, 0.0, 0.0)


def test_a_turn_that_never_completed_counts_no_message() -> None:
    meter = TurnMeter()
    meter.observe(events.Event(events.TOOL_USE, b"{}"))
    types = {r.event_type: r.value for r in meter.rows(row())}
    assert types["tool_call"] == 1
    assert "message" not in types and "input_tokens" not in types


def test_usage_queries_see_only_their_tenants_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "ash.db")
    meter = TurnMeter()
    meter.observe(complete({"input_tokens": 3, "output_tokens": 4}))
    ours = meter.rows(row("ours"))
    theirs = [r.__class__(r.id + "x", "other", "theirs", r.agent_name, r.event_type, r.value,
                          r.created_at) for r in ours]
    store.append_events([("ours", 1, "done", b"{}", time.time())], {}, usage=[*ours, *theirs])
    assert store.usage_totals(UsageFilter("default"))["input_tokens"] == 3
    assert {r.session_id for r in store.list_usage(UsageFilter("other"), 100)} == {"theirs"}
    assert store.usage_totals(UsageFilter("nobody")) == {}
