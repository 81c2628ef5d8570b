"""Session options in split mode: the config rides the agent config to a remote runner,
so `extraEnv` is in the sandbox there, and stays after the session moves to another runner
(cold resume) or is forked."""

from __future__ import annotations

import signal

from tests.split_cluster import echo_cluster_fixtures
from tests.test_split_stop_fork import post_ok, run

cluster, client = echo_cluster_fixtures()
CONFIG = {"extraEnv": {"GREETING": "hello from extraEnv"}, "model": "claude-x",
          "allowedTools": ["Read"]}


def test_extra_env_is_in_a_remote_sandbox_and_follows_the_session_to_another_runner(
    cluster, client
) -> None:
    cluster.add_runners("first")
    response = client.post("/api/sessions", json={"agent": "echo", **CONFIG})
    assert response.status_code == 201, response.text
    sid = response.json()["session"]["id"]
    assert run(client, sid, 'echo "$GREETING"') == "hello from extraEnv\n"
    post_ok(client, f"/api/sessions/{sid}/stop")
    cluster.add_runners("second")
    cluster.runners["first"].stop(signal.SIGKILL)
    cluster.wait_for_runners("first", state="lost")

    resumed = post_ok(client, f"/api/sessions/{sid}/resume")
    assert resumed["runnerId"] == "second"
    assert resumed["config"]["allowedTools"] == ["Read"]
    assert run(client, sid, 'echo "$GREETING"') == "hello from extraEnv\n"
    fork = post_ok(client, f"/api/sessions/{sid}/fork", 201)
    assert fork["config"] == resumed["config"]
    post_ok(client, f"/api/sessions/{fork['id']}/resume")
    assert run(client, fork["id"], 'echo "$GREETING"') == "hello from extraEnv\n"
