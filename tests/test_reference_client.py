"""The reference's published Python client (`ash-ai-sdk`, pinned in the test extras) against
a real gateway: every call it makes to the agent, session and health routes succeeds, and the
objects it parses hold what the gateway did. Plus the shapes it cannot check itself:
the exact timestamp format, the redacted env, and a stable agent id."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import apsw
from ash_sdk import AshClient
from ash_sdk.models.health_response import HealthResponse

from gateway.store import MIGRATIONS, Store
from tests.conftest import create_session, deploy, make_agent_folder
from tests.gateway_process import GatewayProcess, kill_bridge
from tests.split_cluster import Cluster

ISO_MILLIS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
"""What JavaScript's `toISOString()` writes, as the reference does: `2026-12-02T01:02:03.456Z`."""


def reference_client(gateway: GatewayProcess) -> AshClient:
    return AshClient(gateway.url, token=gateway.api_key, timeout=30)


def assert_recent(moment: datetime) -> None:
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


def test_reference_client_deploys_lists_and_gets_an_agent(gateway, tmp_path: Path) -> None:
    ash = reference_client(gateway)
    deployed = ash.deploy_agent("echo", str(make_agent_folder(tmp_path)))
    listed = ash.list_agents()
    shown = ash.get_agent("echo")
    assert isinstance(deployed.id, uuid.UUID) and deployed.id.version == 4
    assert [agent.id for agent in listed] == [deployed.id] and shown.id == deployed.id
    assert (shown.name, shown.version, shown.tenant_id) == ("echo", 1, "default")
    assert Path(shown.path).is_relative_to(tmp_path / "data" / "agents")
    assert_recent(shown.created_at)
    assert shown.updated_at == shown.created_at


def test_reference_client_creates_gets_lists_and_ends_a_session(
    gateway, agent_folder: Path
) -> None:
    ash = reference_client(gateway)
    ash.deploy_agent("echo", str(agent_folder))
    created = ash.create_session("echo")
    shown = ash.get_session(created.id)
    listed = ash.list_sessions(agent="echo")
    ended = ash.end_session(created.id)
    assert isinstance(created.id, uuid.UUID)
    assert (created.agent_name, created.status, created.tenant_id) == ("echo", "active", "default")
    assert created.sandbox_id and created.runner_id is None and created.parent_session_id is None
    assert_recent(created.created_at)
    assert created.last_active_at >= created.created_at
    assert (shown.id, shown.agent_name, shown.status) == (created.id, "echo", "active")
    assert [(s.id, s.status) for s in listed] == [(created.id, "active")]
    assert (ended.id, ended.status) == (created.id, "ended")
    assert ended.last_active_at >= shown.last_active_at
    assert ash.get_session(created.id).status == "ended"


def test_reference_client_parses_health_with_its_pool_counts(gateway, agent_folder: Path) -> None:
    ash = reference_client(gateway)
    ash.deploy_agent("echo", str(agent_folder))
    ash.create_session("echo")
    health = HealthResponse.from_dict(ash.health())
    assert health.status == "ok"
    assert (health.active_sessions, health.active_sandboxes) == (1, 1)
    assert isinstance(health.uptime, int) and 0 <= health.uptime < 60
    assert health.version and health.remote_runners == 0
    pool = health.pool
    assert (pool.total, pool.running, pool.waiting, pool.cold) == (1, 0, 1, 0)
    assert pool.max_capacity >= 1
    assert (pool.resume_warm_hits, pool.resume_cold_hits, pool.pre_warm_hits) == (0, 0, 0)
    assert health.additional_properties["sandboxes"] == {"live": 1, "busy": 0}  # ours, beside


def test_health_counts_warm_and_cold_resumes(client, session) -> None:
    sid = session["id"]
    client.post(f"/api/sessions/{sid}/pause")
    assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
    warm = client.get("/health").json()["pool"]
    kill_bridge(sid)
    assert client.post(f"/api/sessions/{sid}/resume").status_code == 200
    cold = client.get("/health").json()["pool"]
    assert (warm["resumeWarmHits"], warm["resumeColdHits"]) == (1, 0)
    assert (cold["resumeWarmHits"], cold["resumeColdHits"]) == (1, 1)


def test_timestamps_are_iso_utc_with_milliseconds(client, session) -> None:
    agent = client.get("/api/agents/echo").json()["agent"]
    shown = client.get(f"/api/sessions/{session['id']}").json()["session"]
    stamps = [agent["createdAt"], agent["updatedAt"],
              shown["createdAt"], shown["lastActiveAt"], shown["updatedAt"]]
    assert all(ISO_MILLIS_UTC.fullmatch(stamp) for stamp in stamps), stamps


def test_session_keeps_our_own_fields_beside_the_references(client, session) -> None:
    assert session["agent"] == session["agentName"] == "echo"
    assert (session["agentVersion"], session["lastEventId"], session["turns"]) == (1, 0, 0)
    assert session["error"] is None


def test_agent_env_values_are_redacted_everywhere(client, tmp_path: Path) -> None:
    secret = "sk-not-for-clients-0123"
    folder = make_agent_folder(tmp_path, "keyed",
                               {"backend": "mock", "env": {"SERVICE_TOKEN": secret}})
    deployed = deploy(client, "keyed", folder)
    assert deployed["env"] == {"SERVICE_TOKEN": "***"}
    assert deployed["config"]["env"] == {"SERVICE_TOKEN": "***"}
    for path in ("/api/agents", "/api/agents/keyed"):
        assert secret not in client.get(path).text


def test_agent_without_env_has_an_empty_env(client, agent_folder: Path) -> None:
    assert deploy(client, "echo", agent_folder)["env"] == {}


def test_agent_id_is_stable_across_redeploys(client, agent_folder: Path) -> None:
    first = deploy(client, "echo", agent_folder)
    time.sleep(0.002)
    second = deploy(client, "echo", agent_folder)
    assert second["id"] == first["id"] and second["version"] == 2
    assert second["updatedAt"] > second["createdAt"] == first["createdAt"]
    create_session(client, "echo")
    assert client.get("/api/agents/echo").json()["agent"]["id"] == first["id"]


def test_agent_id_changes_when_the_agent_is_deleted_and_deployed_again(
    client, agent_folder: Path
) -> None:
    first = deploy(client, "echo", agent_folder)
    client.delete("/api/agents/echo")
    assert deploy(client, "echo", agent_folder)["id"] != first["id"]


def test_migration_gives_agents_deployed_before_it_distinct_uuid4_ids(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    before = next(i for i, script in enumerate(MIGRATIONS) if "agents ADD COLUMN id" in script)
    old = apsw.Connection(str(path))  # the database a gateway without agent ids wrote
    for script in MIGRATIONS[:before]:
        old.execute(script)
    old.execute(f"PRAGMA user_version={before}")
    for name in ("a", "b"):
        old.execute("INSERT INTO agents (name, path, version, config, created_at, updated_at) "
                    "VALUES (?, ?, 1, '{}', 0, 0)", (name, f"/agents/{name}"))
    old.close()
    agents = Store(path).list_agents()
    ids = [uuid.UUID(agent.id) for agent in agents]
    assert [i.version for i in ids] == [4, 4] and ids[0] != ids[1]
    assert [str(i) for i in ids] == [agent.id for agent in agents]  # canonical lower case


def test_reference_client_sees_runners_and_their_capacity_in_split_mode(tmp_path: Path) -> None:
    with Cluster(tmp_path).start() as cluster:
        cluster.add_runner("r1", max_sandboxes=3)
        cluster.add_runner("r2", max_sandboxes=4)
        cluster.wait_for_runners("r1", "r2")
        ash = reference_client(cluster.gateway)
        ash.deploy_agent("echo", str(make_agent_folder(tmp_path)))
        session = ash.create_session("echo")
        health = HealthResponse.from_dict(ash.health())
    assert session.runner_id in ("r1", "r2") and session.status == "active"
    assert (health.remote_runners, health.pool.max_capacity) == (2, 7)
    assert (health.active_sessions, health.active_sandboxes, health.pool.total) == (1, 1, 1)
