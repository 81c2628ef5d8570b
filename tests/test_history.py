"""A session's history as the reference's clients read it, through a real gateway:
`GET …/messages` (the conversation), `GET …/events` (the timeline), `GET …/logs` (the
bridge's output), and our own per-event log at `GET …/stream/events`."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from ash_sdk.api.sessions import get_api_sessions_id_events as get_events
from ash_sdk.api.sessions import get_api_sessions_id_logs as get_logs
from ash_sdk.api.sessions import get_api_sessions_id_messages as get_messages
from ash_sdk.client import AuthenticatedClient

from tests.conftest import make_client, send_message

Session = dict


def get_ok(client: httpx.Client, path: str, **params: object) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def messages_of(client: httpx.Client, sid: str, **params: object) -> list[dict]:
    return get_ok(client, f"/api/sessions/{sid}/messages", **params)["messages"]


def timeline_of(client: httpx.Client, sid: str, **params: object) -> list[dict]:
    return get_ok(client, f"/api/sessions/{sid}/events", **params)["events"]


def restart_with_a_complaint(client: httpx.Client, sid: str) -> str:
    """Make the session's bridge write a line to its stderr: a malformed conversation file
    in the workspace, which the mock agent reports when a new bridge starts (after a stop
    and a resume). Returns the line's start."""
    response = client.post(f"/api/sessions/{sid}/exec", json={
        "command": "mkdir -p .ash/mock && echo '{}' > .ash/mock/conversation.json"})
    assert response.status_code == 200 and response.json()["exitCode"] == 0, response.text
    assert client.post(f"/api/sessions/{sid}/stop").status_code == 200
    assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
    return "ash-bridge: ignoring malformed "


def log_texts(client: httpx.Client, sid: str, **params: object) -> list[str]:
    return [line["text"] for line in get_ok(client, f"/api/sessions/{sid}/logs",
                                            **params)["logs"]]


def test_messages_are_the_users_and_the_agents_in_order(client, session: Session) -> None:
    sid = session["id"]
    first = send_message(client, sid, "my name is Ada")
    send_message(client, sid, "what is my name?")

    messages = messages_of(client, sid)
    assert [(m["role"], json.loads(m["content"])["type"]) for m in messages] == [
        ("user", "user"), ("assistant", "assistant"), ("assistant", "result")] * 2
    assert json.loads(messages[0]["content"]) == {"type": "user", "content": "my name is Ada"}
    assert messages[0]["sequence"] == first[0].id  # the turn's session_start
    assert json.loads(messages[1]["content"]) == first[-4].data
    assert all(m["sessionId"] == sid and m["tenantId"] == "default" for m in messages)
    assert [m["sequence"] for m in messages] == sorted(m["sequence"] for m in messages)
    assert all(m["createdAt"].endswith("Z") for m in messages)


def test_message_ids_are_uuids_stable_across_calls(client, session: Session) -> None:
    sid = session["id"]
    send_message(client, sid, "hello")
    ids = [m["id"] for m in messages_of(client, sid)]
    assert ids == [m["id"] for m in messages_of(client, sid)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(value) for value in ids)


def test_messages_page_by_sequence_and_limit(client, session: Session) -> None:
    sid = session["id"]
    for text in ("one", "two"):
        send_message(client, sid, text)
    everything = messages_of(client, sid)
    first_two = messages_of(client, sid, limit=2)
    rest = messages_of(client, sid, after=first_two[-1]["sequence"])
    assert first_two + rest == everything


def test_content_blocks_are_the_user_message_content(client, session: Session) -> None:
    blocks = [{"type": "text", "text": "read this"}]
    send_message(client, session["id"], blocks)
    user = messages_of(client, session["id"])[0]
    assert json.loads(user["content"]) == {"type": "user", "content": blocks}


def test_a_fork_has_its_parents_messages(client, session: Session) -> None:
    sid = session["id"]
    send_message(client, sid, "my name is Ada")
    fork = client.post(f"/api/sessions/{sid}/fork").json()["session"]
    parent = messages_of(client, sid)
    child = messages_of(client, fork["id"])
    assert [m["content"] for m in child] == [m["content"] for m in parent]
    assert {m["id"] for m in child}.isdisjoint(m["id"] for m in parent)


def test_timeline_classifies_text_tools_and_turn_ends(client, session: Session) -> None:
    sid = session["id"]
    send_message(client, sid, "/bash echo tool-out")

    timeline = timeline_of(client, sid)
    kinds = [e["type"] for e in timeline]
    assert kinds == ["lifecycle", "tool_start", "tool_result", "text", "turn_complete",
                     "lifecycle"]
    data = [json.loads(e["data"]) for e in timeline]
    assert data[0] == {"action": "turn_started"}
    assert data[1]["toolName"] == "Bash" and data[1]["input"] == {"command": "echo tool-out"}
    assert data[2]["toolId"] == data[1]["toolId"] and "tool-out" in data[2]["stdout"]
    assert data[4]["numTurns"] == 1 and data[4]["result"] == data[3]["text"]
    assert data[5] == {"action": "turn_ended", "status": "ok"}
    assert [e["sequence"] for e in timeline] == sorted(e["sequence"] for e in timeline)
    assert all(e["sessionId"] == sid and e["tenantId"] == "default" for e in timeline)
    assert [e["id"] for e in timeline] == [e["id"] for e in timeline_of(client, sid)]


def test_timeline_filters_by_type_and_pages(client, session: Session) -> None:
    sid = session["id"]
    for text in ("one", "two", "three"):
        send_message(client, sid, text)
    texts = timeline_of(client, sid, type="text")
    assert len(texts) == 3 and {e["type"] for e in texts} == {"text"}
    everything = timeline_of(client, sid)
    head = timeline_of(client, sid, limit=4)
    assert head + timeline_of(client, sid, after=head[-1]["sequence"]) == everything


def test_the_stream_log_keeps_every_event_by_id(client, session: Session) -> None:
    sid = session["id"]
    streamed = send_message(client, sid, "hello")
    logged = get_ok(client, f"/api/sessions/{sid}/stream/events")["events"]
    assert [(e["id"], e["type"]) for e in logged] == [(e.id, e.event) for e in streamed]


def test_logs_are_the_bridges_output_line_by_line(client, session: Session) -> None:
    sid = session["id"]
    complaint = restart_with_a_complaint(client, sid)
    restart_with_a_complaint(client, sid)
    body = get_ok(client, f"/api/sessions/{sid}/logs")
    assert body["source"] == "sandbox"
    lines = body["logs"]
    assert [line["text"].startswith(complaint) for line in lines].count(True) == 2
    assert [line["index"] for line in lines] == list(range(len(lines)))
    assert all(line["level"] == "stderr" and line["ts"].endswith("Z") for line in lines)
    assert log_texts(client, sid, after=lines[-2]["index"]) == [lines[-1]["text"]]
    assert get_ok(client, f"/api/sessions/{sid}/logs", after=-1) == body
    assert log_texts(client, sid, after=lines[-1]["index"]) == []


def test_logs_stay_after_stop_and_go_with_the_session(client, session: Session) -> None:
    sid = session["id"]
    complaint = restart_with_a_complaint(client, sid)
    assert client.post(f"/api/sessions/{sid}/stop").status_code == 200
    assert log_texts(client, sid)[-1].startswith(complaint)
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert log_texts(client, sid) == []


@pytest.mark.parametrize(("path", "params", "names"), [
    ("messages", {"limit": "0"}, "`limit`"),
    ("messages", {"limit": "1001"}, "`limit`"),
    ("messages", {"after": "-1"}, "`after`"),
    ("messages", {"after": "x"}, "`after`"),
    ("events", {"limit": "1001"}, "`limit`"),
    ("events", {"after": "1.5"}, "`after`"),
    ("events", {"type": "text_delta"}, "`type`"),
    ("logs", {"after": "-2"}, "`after`"),
    ("logs", {"after": "one"}, "`after`"),
])
def test_bad_history_parameters_are_400(client, session: Session, path: str,
                                        params: dict, names: str) -> None:
    response = client.get(f"/api/sessions/{session['id']}/{path}", params=params)
    assert response.status_code == 400, response.text
    assert names in response.json()["error"]
    assert response.json()["statusCode"] == 400


@pytest.mark.parametrize("path", ["messages", "events", "stream/events", "logs"])
def test_history_of_an_unknown_session_is_404(client, path: str) -> None:
    response = client.get(f"/api/sessions/{uuid.uuid4()}/{path}")
    assert response.status_code == 404, response.text
    assert response.json()["statusCode"] == 404


def test_the_reference_sdk_reads_messages_timeline_and_logs(gateway, client,
                                                            session: Session) -> None:
    sid = session["id"]
    send_message(client, sid, "/bash echo hi")
    restart_with_a_complaint(client, sid)
    sdk = AuthenticatedClient(base_url=gateway.url, token=gateway.api_key, timeout=30)
    with sdk:
        messages = get_messages.sync(uuid.UUID(sid), client=sdk)
        timeline = get_events.sync(uuid.UUID(sid), client=sdk, type_="tool_start")
        logs = get_logs.sync(uuid.UUID(sid), client=sdk)
    assert [m.role for m in messages.messages][:2] == ["user", "assistant"]
    assert all(isinstance(m.id, uuid.UUID) for m in messages.messages)
    assert [json.loads(e.data)["toolName"] for e in timeline.events] == ["Bash"]
    assert logs.source == "sandbox" and logs.logs[-1].level == "stderr"


def test_a_new_session_has_no_history(client, session: Session) -> None:
    assert messages_of(client, session["id"]) == []
    assert timeline_of(client, session["id"]) == []


def test_the_conversation_outlives_a_gateway_restart(gateway, session: Session) -> None:
    with make_client(gateway) as client:
        send_message(client, session["id"], "remember me")
        before = messages_of(client, session["id"])
    gateway.stop()
    gateway.start()
    with make_client(gateway) as client:
        assert messages_of(client, session["id"]) == before
