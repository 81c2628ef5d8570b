"""A session's history in split mode: a coordinator gateway and a real runner. Messages
and the timeline come from the gateway's log; the bridge's output comes from the runner
that holds the sandbox's directory, over the ReadLogs rpc."""

from __future__ import annotations

import json
import signal

from tests.conftest import create_session, send_message
from tests.split_cluster import echo_cluster_fixtures
from tests.test_history import log_texts, messages_of, restart_with_a_complaint, timeline_of

cluster, client = echo_cluster_fixtures()


def test_messages_and_timeline_of_a_session_on_a_runner(cluster, client) -> None:
    cluster.add_runners("first")
    sid = create_session(client, "echo")["id"]
    first = send_message(client, sid, "my name is Ada")
    messages = messages_of(client, sid)
    assert [m["role"] for m in messages] == ["user", "assistant", "assistant"]
    assert messages[0]["sequence"] == first[0].id
    assert json.loads(messages[1]["content"]) == first[-4].data
    assert [e["type"] for e in timeline_of(client, sid)] == [
        "lifecycle", "text", "turn_complete", "lifecycle"]


def test_logs_come_from_the_runner(cluster, client) -> None:
    cluster.add_runners("first")
    sid = create_session(client, "echo")["id"]
    complaint = restart_with_a_complaint(client, sid)
    lines = log_texts(client, sid)
    assert lines and lines[-1].startswith(complaint)
    assert log_texts(client, sid, after=len(lines) - 2) == lines[-1:]
    assert log_texts(client, sid, after=len(lines) - 1) == []


def test_logs_of_a_session_whose_runner_is_gone_are_empty(cluster, client) -> None:
    cluster.add_runners("first")
    sid = create_session(client, "echo")["id"]
    restart_with_a_complaint(client, sid)
    cluster.runners["first"].stop(signal.SIGKILL)
    cluster.wait_for_runners("first", state="lost")
    assert log_texts(client, sid) == []
