"""A client's mistake gets a clear JSON error with the right status, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import send_message
from tests.sse_client import parse_sse


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status
    assert fragment in body["error"]


def snapshot(client: httpx.Client) -> tuple[list, list]:
    return (client.get("/api/agents").json()["agents"],
            client.get("/api/sessions").json()["sessions"])


def test_malformed_json_is_400_and_creates_nothing(client, agent_folder) -> None:
    before = snapshot(client)
    response = client.post("/api/agents", content=b'{"name": "x", "path": ',
                           headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed JSON")
    assert snapshot(client) == before


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
def test_non_object_json_body_is_400(client, body) -> None:
    assert_error(client.post("/api/sessions", json=body), 400, "JSON object")


def test_wrong_field_type_is_400(client, agent_folder) -> None:
    assert_error(client.post("/api/agents", json={"name": 5, "path": str(agent_folder)}),
                 400, "`name` must be a string")
    assert client.get("/api/agents").json()["agents"] == []


def test_missing_field_is_400(client) -> None:
    assert_error(client.post("/api/sessions", json={}), 400, "`agent` is required")


def test_unknown_agent_is_404_and_creates_no_session(client) -> None:
    assert_error(client.post("/api/sessions", json={"agent": "nobody"}), 404, "agent not found")
    assert client.get("/api/sessions").json()["sessions"] == []


def test_unknown_session_is_404(client) -> None:
    assert_error(client.get("/api/sessions/nope"), 404, "session not found")
    assert_error(client.post("/api/sessions/nope/messages", json={"content": "x"}), 404,
                 "session not found")


def test_oversized_body_is_413_and_changes_nothing(client, session) -> None:
    before = client.get(f"/api/sessions/{session['id']}").json()
    huge = {"content": "x" * (50 * 1024 * 1024 + 1)}
    assert_error(client.post(f"/api/sessions/{session['id']}/messages", json=huge), 413,
                 "exceeds")
    assert client.get(f"/api/sessions/{session['id']}").json() == before
    assert client.get(f"/api/sessions/{session['id']}/stream/events").json()["events"] == []


@pytest.mark.parametrize("name", ["../evil", "..", "a/b", ".hidden", "x" * 65, "a..b", "a b"])
def test_path_traversal_or_invalid_agent_name_is_400(client, agent_folder, name) -> None:
    assert_error(client.post("/api/agents", json={"name": name, "path": str(agent_folder)}),
                 400, "agent name")
    assert client.get("/api/agents").json()["agents"] == []


def test_url_encoded_traversal_in_agent_path_is_rejected(client, gateway) -> None:
    response = client.get("/api/agents/..%2F..%2Fetc")
    assert response.status_code in (400, 404)
    assert "statusCode" in response.json()


def test_agent_folder_without_claude_md_is_400(client, tmp_path: Path) -> None:
    folder = tmp_path / "empty-agent"
    folder.mkdir()
    assert_error(client.post("/api/agents", json={"name": "empty", "path": str(folder)}),
                 400, "CLAUDE.md")
    assert client.get("/api/agents").json()["agents"] == []


def test_relative_or_missing_agent_path_is_400(client) -> None:
    assert_error(client.post("/api/agents", json={"name": "a", "path": "relative/dir"}),
                 400, "absolute")
    assert_error(client.post("/api/agents", json={"name": "a", "path": "/no/such/dir"}),
                 400, "not found")


def test_invalid_agent_config_is_400(client, tmp_path: Path) -> None:
    folder = tmp_path / "bad-config"
    folder.mkdir()
    (folder / "CLAUDE.md").write_text("x")
    (folder / "agent.json").write_text("{nope")
    assert_error(client.post("/api/agents", json={"name": "bad", "path": str(folder)}),
                 400, "agent.json")


def test_empty_message_content_is_400(client, session) -> None:
    assert_error(client.post(f"/api/sessions/{session['id']}/messages", json={"content": ""}),
                 400, "`content` must not be empty")


def test_bad_list_filters_are_400(client) -> None:
    assert_error(client.get("/api/sessions", params={"limit": "many"}), 400, "`limit`")
    assert_error(client.get("/api/sessions", params={"limit": 0}), 400, "`limit`")
    assert_error(client.get("/api/sessions", params={"status": "sleeping"}), 400, "`status`")
    assert_error(client.get("/api/sessions/x/stream/events", params={"after": "-1"}), 400,
                 "`after`")


def test_second_concurrent_message_is_409_and_first_turn_completes(client, session) -> None:
    sid = session["id"]
    with client.stream("POST", f"/api/sessions/{sid}/messages",
                       json={"content": "slow one",
                             "options": {"tokenIntervalMs": 30, "tokens": 20}}) as first:
        chunks = first.iter_raw()
        head = next(chunks)
        second = client.post(f"/api/sessions/{sid}/messages", json={"content": "me too"})
        assert_error(second, 409, "busy")
        events = parse_sse([head, *chunks])
    assert events[-1].event == "done"
    history = client.get(f"/api/sessions/{sid}/stream/events").json()["events"]
    assert len(history) == len(events)
    assert client.get(f"/api/sessions/{sid}").json()["session"]["turns"] == 1


def test_pause_during_a_turn_is_409(client, session) -> None:
    sid = session["id"]
    with client.stream("POST", f"/api/sessions/{sid}/messages",
                       json={"content": "slow", "options": {"tokenIntervalMs": 30,
                                                            "tokens": 10}}) as first:
        chunks = first.iter_raw()
        next(chunks)
        assert_error(client.post(f"/api/sessions/{sid}/pause"), 409, "busy")
        for _ in chunks:
            pass
    assert client.get(f"/api/sessions/{sid}").json()["session"]["status"] == "active"


def test_delete_agent_with_live_session_is_409(client, session) -> None:
    assert_error(client.delete("/api/agents/echo"), 409, "live session")
    assert client.get("/api/agents/echo").status_code == 200


def test_unknown_route_is_404_json(client) -> None:
    assert_error(client.get("/api/nothing-here"), 404, "no route")


def test_wrong_method_is_405_json(client) -> None:
    assert_error(client.put("/api/sessions"), 405, "not allowed")


def test_message_options_with_wrong_types_are_400(client, session) -> None:
    url = f"/api/sessions/{session['id']}/messages"
    assert_error(client.post(url, json={"content": "x", "options": []}), 400, "`options`")
    assert_error(client.post(url, json={"content": "x", "maxTurns": "3"}), 400, "`maxTurns`")
    events = send_message(client, session["id"], "still works")
    assert events[-1].event == "done"
