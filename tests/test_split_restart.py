"""A gateway restart: runners register again on their own, and each session goes on
on the runner and in the very sandbox it had (the sessions table is the routing table)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.gateway_process import bridge_pids
from tests.split_cluster import Cluster, session_of
from tests.sse_client import reply_text


def test_runners_register_again_and_sessions_keep_their_runner_and_sandbox(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path).start() as cluster:
        cluster.add_runners("r1", "r2")
        with cluster.client() as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            sessions = {create_session(client, "echo")["id"]: n for n in ("one", "two")}
            for session_id, name in sessions.items():
                send_message(client, session_id, f"remember {name}")
            homes = {sid: session_of(client, sid)["runnerId"] for sid in sessions}
            bridges = {sid: bridge_pids(sid) for sid in sessions}
        assert set(homes.values()) == {"r1", "r2"}

        cluster.restart_gateway()
        cluster.wait_for_runners("r1", "r2")
        with cluster.client() as client:
            for session_id, name in sessions.items():
                assert session_of(client, session_id)["status"] == "active"
                reply = reply_text(send_message(client, session_id, "still there?"))
                assert f"remember {name}" in reply
                assert session_of(client, session_id)["runnerId"] == homes[session_id]
                assert bridge_pids(session_id) == bridges[session_id]
            runners = cluster.runner_states()
        assert {r["sessions"] for r in runners.values()} == {1}
