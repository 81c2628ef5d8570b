"""Every number a client sends is parsed strictly and bounded (issue 11, finding 7).

Over a real socket, with a real HTTP/2 client, against one real gateway with a real
sandbox: each bad value is a 400 with `{"error", "statusCode"}` naming the field and
its bounds, changes nothing, and the session still works afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess
from wire.options import MAX_AGENT_TURNS, MAX_DELAY_MS, MAX_MODEL_NAME, MAX_TOKENS

INT64_OVERFLOW = str(2**63)
"""19 digits, one past the largest event id (int64)."""
BAD_INTEGERS = ["1_0", "9" * 29, "0" * 20, INT64_OVERFLOW, "+1", "-1", "1.0", "0x10", "1e3",
                " 1", "1 ", "\u0663", "\uff11", "1\x00"]
"""Each one Python's int() takes, or an ASCII edge: none is 1 to 19 ASCII digits in int64."""
BAD_HEADER_IDS = ["1_0", "9" * 29, "0" * 20, INT64_OVERFLOW, "+1", "-1", "1.0", "0x10", "1e3",
                  ""]
"""The ones an HTTP/2 client can put in a header (no surrounding space, ASCII)."""


@dataclass
class Target:
    gateway: GatewayProcess
    client: httpx.Client
    sid: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root: Path = tmp_path_factory.mktemp("strict")
    gateway = GatewayProcess(root / "data").start()
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", make_agent_folder(root))
            yield Target(gateway, client, create_session(client, "echo")["id"])
    finally:
        gateway.stop()


def refusal(client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    """The response, its body read only if it is not a stream: an SSE stream accepted by
    mistake stays open, and the test must fail at once rather than wait on it."""
    with client.stream(method, url, **kwargs) as response:  # type: ignore[arg-type]
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
    return response


def assert_400(response: httpx.Response, *fragments: str) -> None:
    assert response.status_code == 400, response.status_code
    body = response.json()
    assert body["statusCode"] == 400
    for fragment in fragments:
        assert fragment in body["error"], body


def session_state(t: Target) -> dict:
    return t.client.get(f"/api/sessions/{t.sid}").json()["session"]


def assert_still_usable(t: Target, before: dict) -> None:
    """Nothing changed, and a good message runs a whole turn."""
    now = session_state(t)
    assert (now["status"], now["turns"], now["lastEventId"]) == (
        before["status"], before["turns"], before["lastEventId"])
    events = send_message(t.client, t.sid, "still works")
    assert events[-1].event == "done" and events[-1].data["status"] == "ok"


@pytest.mark.parametrize("value", BAD_HEADER_IDS, ids=repr)
def test_last_event_id_header_must_be_1_to_19_ascii_digits_in_int64(
        target: Target, value: str) -> None:
    before = session_state(target)
    response = refusal(target.client, "GET", f"/api/sessions/{target.sid}/stream",
                       headers={"last-event-id": value})
    assert_400(response, "Last-Event-ID", str(2**63 - 1))
    assert_still_usable(target, before)


@pytest.mark.parametrize("value", BAD_INTEGERS, ids=repr)
@pytest.mark.parametrize("route", ["stream", "events"])
def test_after_query_parameter_is_parsed_strictly(target: Target, route: str, value: str) -> None:
    before = session_state(target)
    response = refusal(target.client, "GET", f"/api/sessions/{target.sid}/{route}",
                       params={"after": value})
    assert_400(response, "`after`")
    assert_still_usable(target, before)


@pytest.mark.parametrize("value", [*BAD_INTEGERS, "0", "10001"], ids=repr)
def test_events_limit_is_parsed_strictly_and_bounded(target: Target, value: str) -> None:
    response = target.client.get(f"/api/sessions/{target.sid}/stream/events",
                                 params={"limit": value})
    assert_400(response, "`limit`", "10000")


@pytest.mark.parametrize(("path", "name", "value"), [
    *((path, name, v) for path in ("messages", "events") for name, bad in (
        ("limit", ["0", "1001"]), ("after", [])) for v in [*BAD_INTEGERS, *bad]),
    *(("logs", "after", v) for v in [*BAD_INTEGERS, "-2", "--1"] if v != "-1"),
], ids=repr)
def test_history_parameters_are_parsed_strictly_and_bounded(
        target: Target, path: str, name: str, value: str) -> None:
    response = target.client.get(f"/api/sessions/{target.sid}/{path}", params={name: value})
    assert_400(response, f"`{name}`")


@pytest.mark.parametrize("path", ["messages", "events", "logs"])
def test_largest_sequence_is_accepted_as_history_after(target: Target, path: str) -> None:
    response = target.client.get(f"/api/sessions/{target.sid}/{path}",
                                 params={"after": str(2**63 - 1)})
    assert response.status_code == 200, response.text
    assert response.json()["logs" if path == "logs" else path] == []


@pytest.mark.parametrize(("name", "value"), [
    *(("limit", v) for v in [*BAD_INTEGERS, "0", "1001"]),
    *(("offset", v) for v in [*BAD_INTEGERS, str(2**31)]),
], ids=repr)
def test_session_list_limit_and_offset_are_parsed_strictly_and_bounded(
        target: Target, name: str, value: str) -> None:
    response = target.client.get("/api/sessions", params={name: value})
    assert_400(response, f"`{name}`")


@pytest.mark.parametrize(("route", "name"), [
    ("/api/sessions", "status"), ("/api/sessions", "limit"),
    ("/api/sessions/{sid}/events", "after"), ("/api/sessions/{sid}/files", "includeHidden"),
])
def test_a_blank_query_value_is_a_bad_value_not_an_absent_one(
        target: Target, route: str, name: str) -> None:
    response = target.client.get(route.format(sid=target.sid) + f"?{name}=")
    assert_400(response, f"`{name}`")


def test_largest_event_id_is_accepted_as_after(target: Target) -> None:
    response = target.client.get(f"/api/sessions/{target.sid}/stream/events",
                                 params={"after": str(2**63 - 1)})
    assert response.status_code == 200 and response.json() == {"events": []}


@pytest.mark.parametrize("value", [True, "30", 0, -1, 2.5, 300_001, 1e300, [30], None, {}],
                         ids=repr)
def test_exec_timeout_must_be_milliseconds_in_bounds(target: Target, value: object) -> None:
    before = session_state(target)
    response = target.client.post(f"/api/sessions/{target.sid}/exec",
                                  json={"command": "echo hi", "timeout": value})
    assert_400(response, "`timeout`", "[1, 300000] milliseconds")
    good = target.client.post(f"/api/sessions/{target.sid}/exec",
                              json={"command": "echo hi", "timeout": 5000})
    assert good.status_code == 200 and good.json()["stdout"] == "hi\n"
    assert_still_usable(target, before)


BAD_OPTIONS: list[tuple[dict, str, str]] = [
    ({"options": {"firstTokenDelayMs": 1e300}}, "`options.firstTokenDelayMs`", f"{MAX_DELAY_MS}"),
    ({"options": {"firstTokenDelayMs": -1}}, "`options.firstTokenDelayMs`", "[0, "),
    ({"options": {"firstTokenDelayMs": "5"}}, "`options.firstTokenDelayMs`", "a number"),
    ({"options": {"firstTokenDelayMs": True}}, "`options.firstTokenDelayMs`", "a number"),
    ({"options": {"firstTokenDelayMs": None}}, "`options.firstTokenDelayMs`", "a number"),
    ({"options": {"tokenIntervalMs": MAX_DELAY_MS + 1}}, "`options.tokenIntervalMs`", "ms"),
    ({"options": {"tokenIntervalMs": "1e300"}}, "`options.tokenIntervalMs`", "a number"),
    ({"options": {"tokens": 0}}, "`options.tokens`", f"[1, {MAX_TOKENS}]"),
    ({"options": {"tokens": MAX_TOKENS + 1}}, "`options.tokens`", f"[1, {MAX_TOKENS}]"),
    ({"options": {"tokens": 2.5}}, "`options.tokens`", "an integer"),
    ({"options": {"tokens": True}}, "`options.tokens`", "an integer"),
    ({"options": {"maxTurns": 0}}, "`options.maxTurns`", f"{MAX_AGENT_TURNS}"),
    ({"options": {"maxTurns": MAX_AGENT_TURNS + 1}}, "`options.maxTurns`", "an integer"),
    ({"options": {"model": 5}}, "`options.model`", "a string"),
    ({"options": {"model": "m" * (MAX_MODEL_NAME + 1)}}, "`options.model`", "characters"),
    ({"maxTurns": True}, "`maxTurns`", "an integer"),
    ({"maxTurns": 1e300}, "`maxTurns`", "an integer"),
    ({"maxTurns": "3"}, "`maxTurns`", "an integer"),
    ({"model": ""}, "`model`", "a string"),
]


@pytest.mark.parametrize(("extra", "name", "fragment"), BAD_OPTIONS, ids=repr)
def test_message_option_out_of_bounds_is_400_and_runs_no_turn(
        target: Target, extra: dict, name: str, fragment: str) -> None:
    before = session_state(target)
    response = refusal(target.client, "POST", f"/api/sessions/{target.sid}/messages",
                       json={"content": "x", **extra})
    assert_400(response, name, fragment)
    assert_still_usable(target, before)


def test_message_options_at_their_bounds_are_accepted(target: Target) -> None:
    events = send_message(target.client, target.sid, "edge", maxTurns=MAX_AGENT_TURNS,
                          options={"firstTokenDelayMs": 0, "tokenIntervalMs": 0.5, "tokens": 3})
    assert sum(e.event == "text_delta" for e in events) == 3
    assert events[-1].event == "done"
