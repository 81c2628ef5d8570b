"""`/api/queue` on a real gateway: a queued prompt runs as a turn whose events its session
keeps, in order of priority, retried with backoff, cancellable while pending; bad input is
refused and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_session, deploy, make_agent_folder, make_client
from tests.gateway_process import GatewayProcess

DONE_STATUSES = ("completed", "failed", "cancelled")


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def enqueue(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/queue", json={"agentName": "echo", "prompt": "hello", **body})
    assert response.status_code == 201, response.text
    return response.json()["item"]


def wait_until_settled(client: httpx.Client, item_id: str, limit: float = 30) -> dict:
    deadline = time.monotonic() + limit
    while True:
        item = client.get(f"/api/queue/{item_id}").json()["item"]
        if item["status"] in DONE_STATUSES:
            return item
        assert time.monotonic() < deadline, item
        time.sleep(0.05)


def logged_events(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/sessions/{session_id}/stream/events")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def start_gateway(data_dir: Path, *args: str) -> GatewayProcess:
    return GatewayProcess(data_dir, extra_args=list(args)).start()


@pytest.fixture
def queue_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(tmp_path / "data", "--queue-retry-base", "0.3")
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def queue_client(queue_gateway: GatewayProcess, tmp_path: Path) -> Iterator[httpx.Client]:
    with make_client(queue_gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        yield client


@pytest.fixture(scope="module")
def idle_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A gateway whose queue processes nothing (`--queue-concurrency 0`): items stay
    pending, so what a request changed is plain to see."""
    root = tmp_path_factory.mktemp("idle")
    gateway = start_gateway(root / "data", "--queue-concurrency", "0")
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", make_agent_folder(root))
            deploy(client, "other", make_agent_folder(root, "other"))
            yield client
    finally:
        gateway.stop()


def test_a_queued_prompt_runs_in_a_new_session_that_keeps_its_events(
    queue_client: httpx.Client,
) -> None:
    queued = enqueue(queue_client, prompt="remember the tide tables")
    assert (queued["status"], queued["sessionId"], queued["retryCount"]) == ("pending", None, 0)
    item = wait_until_settled(queue_client, queued["id"])
    assert (item["status"], item["error"], item["retryCount"]) == ("completed", None, 0)
    assert seconds(item["createdAt"]) <= seconds(item["startedAt"]) <= seconds(
        item["completedAt"])
    session = queue_client.get(f"/api/sessions/{item['sessionId']}").json()["session"]
    assert (session["agentName"], session["status"], session["turns"]) == ("echo", "stopped", 1)
    logged = logged_events(queue_client, item["sessionId"])
    assert logged[0]["type"] == "session_start"
    assert [e["data"]["status"] for e in logged if e["type"] == "done"] == ["ok"]
    turn = next(e for e in logged if e["type"] == "turn_complete")
    assert "remember the tide tables" in turn["data"]["result"]
    with queue_client.stream("GET", f"/api/sessions/{item['sessionId']}/stream",
                             params={"after": "0"}) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == \
            "event: session_start"


def test_a_queued_prompt_runs_as_the_next_turn_of_the_given_session(
    queue_client: httpx.Client,
) -> None:
    session = create_session(queue_client, "echo")
    item = wait_until_settled(queue_client,
                              enqueue(queue_client, sessionId=session["id"])["id"])
    assert (item["status"], item["sessionId"]) == ("completed", session["id"])
    shown = queue_client.get(f"/api/sessions/{session['id']}").json()["session"]
    assert (shown["status"], shown["turns"]) == ("active", 1)  # a client's session stays live
    second = wait_until_settled(queue_client, enqueue(
        queue_client, sessionId=session["id"], prompt="and again")["id"])
    assert second["status"] == "completed"
    results = [e["data"]["result"] for e in logged_events(queue_client, session["id"])
               if e["type"] == "turn_complete"]
    assert len(results) == 2 and "Earlier you said: hello" in results[1]


def test_a_paused_session_is_resumed_for_its_queued_prompt(queue_client: httpx.Client) -> None:
    session = create_session(queue_client, "echo")
    assert queue_client.post(f"/api/sessions/{session['id']}/pause").status_code == 200
    item = wait_until_settled(queue_client,
                              enqueue(queue_client, sessionId=session["id"])["id"])
    assert item["status"] == "completed"


def test_a_busy_session_is_retried_with_backoff_then_the_item_fails(
    queue_client: httpx.Client,
) -> None:
    session = create_session(queue_client, "echo")
    # A long turn the client leaves: it goes on, and keeps the session busy.
    with queue_client.stream("POST", f"/api/sessions/{session['id']}/messages", json={
            "content": "slow", "options": {"tokenIntervalMs": 200, "tokens": 60}}) as turn:
        next(turn.iter_raw())
    item = wait_until_settled(queue_client, enqueue(
        queue_client, sessionId=session["id"], maxRetries=2)["id"])
    assert (item["status"], item["retryCount"]) == ("failed", 2)
    assert "busy" in item["error"]
    # attempts at +0, +0.3 s (base), +0.9 s (then twice the base)
    waited = seconds(item["startedAt"]) - seconds(item["createdAt"])
    assert 0.9 - 0.01 <= waited < 5
    assert seconds(item["nextAttemptAt"]) <= seconds(item["startedAt"])
    assert queue_client.post(f"/api/sessions/{session['id']}/interrupt").status_code == 200


def test_an_interrupted_queued_turn_fails_the_item_without_retries(
    queue_client: httpx.Client, tmp_path: Path,
) -> None:
    deploy(queue_client, "slow", make_agent_folder(tmp_path, "slow", {
        "backend": "mock", "mock": {"token_interval_ms": 200, "tokens": 50}}))
    item = enqueue(queue_client, agentName="slow")
    deadline = time.monotonic() + 30
    while not (shown := queue_client.get(f"/api/queue/{item['id']}").json()["item"])[
            "sessionId"] or "text_delta" not in [
            e["type"] for e in logged_events(queue_client, shown["sessionId"])]:
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)
    assert queue_client.post(f"/api/sessions/{shown['sessionId']}/interrupt").status_code == 200
    settled = wait_until_settled(queue_client, item["id"])
    assert (settled["status"], settled["retryCount"]) == ("failed", 0)
    assert "interrupted" in settled["error"]


def test_an_item_whose_session_ended_fails_without_retries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gateway = start_gateway(data, "--queue-concurrency", "0")
    with make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        session = create_session(client, "echo")
        item = enqueue(client, sessionId=session["id"])
        assert client.delete(f"/api/sessions/{session['id']}").status_code == 200
    gateway.stop()
    gateway = start_gateway(data, "--queue-retry-base", "0.1")
    try:
        with make_client(gateway) as client:
            settled = wait_until_settled(client, item["id"])
    finally:
        gateway.stop()
    assert (settled["status"], settled["retryCount"]) == ("failed", 0)
    assert "ended" in settled["error"]


def test_items_run_by_priority_then_age_and_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gateway = start_gateway(data, "--queue-concurrency", "0")
    with make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        ids = {name: enqueue(client, prompt=name, priority=priority)["id"] for name, priority in
               (("low", -3), ("urgent", 9), ("normal", 0), ("urgent too", 9))}
    gateway.stop()
    gateway = start_gateway(data, "--queue-concurrency", "1")
    try:
        with make_client(gateway) as client:
            items = {name: wait_until_settled(client, item_id)
                     for name, item_id in ids.items()}
    finally:
        gateway.stop()
    assert {item["status"] for item in items.values()} == {"completed"}
    order = sorted(items, key=lambda name: seconds(items[name]["startedAt"]))
    assert order == ["urgent", "urgent too", "normal", "low"]


def test_a_pending_item_is_cancelled_once_and_never_runs(idle_client: httpx.Client) -> None:
    item = enqueue(idle_client)
    cancelled = idle_client.delete(f"/api/queue/{item['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["item"]["status"] == "cancelled"
    assert cancelled.json()["item"]["completedAt"] is not None
    again = idle_client.delete(f"/api/queue/{item['id']}")
    assert again.status_code == 409 and again.json()["statusCode"] == 409
    assert idle_client.get(f"/api/queue/{item['id']}").json()["item"]["status"] == "cancelled"


def test_a_finished_item_cannot_be_cancelled(queue_client: httpx.Client) -> None:
    item = wait_until_settled(queue_client, enqueue(queue_client)["id"])
    response = queue_client.delete(f"/api/queue/{item['id']}")
    assert response.status_code == 409
    assert "completed" in response.json()["error"]


def test_list_filters_by_status_and_limit_and_stats_count_each(
    idle_client: httpx.Client,
) -> None:
    before = idle_client.get("/api/queue/stats").json()["stats"]
    first, second = enqueue(idle_client), enqueue(idle_client, priority=4, maxRetries=0)
    idle_client.delete(f"/api/queue/{first['id']}")
    stats = idle_client.get("/api/queue/stats").json()["stats"]
    assert set(stats) == {"pending", "processing", "completed", "failed", "cancelled"}
    assert stats["pending"] == before["pending"] + 1
    assert stats["cancelled"] == before["cancelled"] + 1
    pending = idle_client.get("/api/queue", params={"status": "pending"}).json()["items"]
    assert second["id"] in [i["id"] for i in pending]
    assert first["id"] not in [i["id"] for i in pending]
    newest = idle_client.get("/api/queue", params={"limit": "1"}).json()["items"]
    assert [i["id"] for i in newest] == [second["id"]]
    assert (newest[0]["priority"], newest[0]["maxRetries"]) == (4, 0)


BAD_BODIES = [
    ({"prompt": "hi"}, "agentName"),
    ({"agentName": 7, "prompt": "hi"}, "agentName"),
    ({"agentName": "../x", "prompt": "hi"}, "agent name"),
    ({"agentName": "echo"}, "prompt"),
    ({"agentName": "echo", "prompt": ""}, "prompt"),
    ({"agentName": "echo", "prompt": "   "}, "prompt"),
    ({"agentName": "echo", "prompt": ["hi"]}, "prompt"),
    ({"agentName": "echo", "prompt": "x" * 500_001}, "prompt"),
    ({"agentName": "echo", "prompt": "hi", "priority": "1"}, "priority"),
    ({"agentName": "echo", "prompt": "hi", "priority": 1.5}, "priority"),
    ({"agentName": "echo", "prompt": "hi", "priority": True}, "priority"),
    ({"agentName": "echo", "prompt": "hi", "priority": None}, "priority"),
    ({"agentName": "echo", "prompt": "hi", "priority": 1_000_001}, "priority"),
    ({"agentName": "echo", "prompt": "hi", "priority": -1_000_001}, "priority"),
    ({"agentName": "echo", "prompt": "hi", "priority": 2**64}, "priority"),
    ({"agentName": "echo", "prompt": "hi", "maxRetries": -1}, "maxRetries"),
    ({"agentName": "echo", "prompt": "hi", "maxRetries": 21}, "maxRetries"),
    ({"agentName": "echo", "prompt": "hi", "maxRetries": 2.0}, "maxRetries"),
    ({"agentName": "echo", "prompt": "hi", "maxRetries": "3"}, "maxRetries"),
    ({"agentName": "echo", "prompt": "hi", "sessionId": 5}, "sessionId"),
]


@pytest.mark.parametrize(("body", "named"), BAD_BODIES,
                         ids=[f"{i}-{named}" for i, (_, named) in enumerate(BAD_BODIES)])
def test_bad_input_is_a_400_naming_the_field_and_queues_nothing(
    idle_client: httpx.Client, body: dict[str, Any], named: str,
) -> None:
    before = idle_client.get("/api/queue", params={"limit": "500"}).json()
    response = idle_client.post("/api/queue", json=body)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"] and response.json()["statusCode"] == 400
    assert idle_client.get("/api/queue", params={"limit": "500"}).json() == before


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b'"x"', b"null"])
def test_a_body_that_is_not_a_json_object_is_a_400(idle_client: httpx.Client,
                                                    raw: bytes) -> None:
    response = idle_client.post("/api/queue", content=raw,
                                headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_an_oversized_body_is_a_413(idle_client: httpx.Client) -> None:
    response = idle_client.post("/api/queue", json={
        "agentName": "echo", "prompt": "x" * (5 * 1024 * 1024)})
    assert response.status_code == 413


def test_an_unknown_agent_is_a_404(idle_client: httpx.Client) -> None:
    response = idle_client.post("/api/queue", json={"agentName": "nobody", "prompt": "hi"})
    assert response.status_code == 404 and "nobody" in response.json()["error"]


def test_an_unknown_session_is_a_404(idle_client: httpx.Client) -> None:
    response = idle_client.post("/api/queue", json={
        "agentName": "echo", "prompt": "hi", "sessionId": "no-such-session"})
    assert response.status_code == 404


def test_an_ended_session_is_a_410(idle_client: httpx.Client) -> None:
    session = create_session(idle_client, "echo")
    idle_client.delete(f"/api/sessions/{session['id']}")
    response = idle_client.post("/api/queue", json={
        "agentName": "echo", "prompt": "hi", "sessionId": session["id"]})
    assert response.status_code == 410


def test_a_session_of_another_agent_is_a_400(idle_client: httpx.Client) -> None:
    session = create_session(idle_client, "other")
    response = idle_client.post("/api/queue", json={
        "agentName": "echo", "prompt": "hi", "sessionId": session["id"]})
    assert response.status_code == 400 and "other" in response.json()["error"]
    idle_client.delete(f"/api/sessions/{session['id']}")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_unknown_item_is_a_404(idle_client: httpx.Client, method: str) -> None:
    response = idle_client.request(method, "/api/queue/no-such-item")
    assert response.status_code == 404 and response.json()["statusCode"] == 404


@pytest.mark.parametrize("params", [{"status": "done"}, {"status": ""}, {"limit": "0"},
                                    {"limit": "501"}, {"limit": "ten"}, {"limit": "-1"},
                                    {"limit": "1_0"}])
def test_a_bad_list_query_is_a_400(idle_client: httpx.Client, params: dict[str, str]) -> None:
    assert idle_client.get("/api/queue", params=params).status_code == 400


def test_a_full_queue_refuses_with_429(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path / "data", "--queue-concurrency", "0",
                            "--queue-max-pending", "2")
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            enqueue(client)
            enqueue(client)
            full = client.post("/api/queue", json={"agentName": "echo", "prompt": "hi"})
            assert full.status_code == 429 and "full" in full.json()["error"]
            assert client.get("/api/queue/stats").json()["stats"]["pending"] == 2
    finally:
        gateway.stop()
