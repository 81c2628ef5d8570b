"""Agents, session listing, interrupt, health and the command line, via a real gateway."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.sse_client import assistant_text, parse_sse


def test_redeploy_bumps_version_and_replaces_the_copied_folder(client, tmp_path: Path) -> None:
    folder = make_agent_folder(tmp_path, "versioned")
    first = deploy(client, "versioned", folder)
    (folder / "CLAUDE.md").write_text("second prompt")
    second = deploy(client, "versioned", folder)
    assert (first["version"], second["version"]) == (1, 2)
    assert Path(second["path"]).is_relative_to(tmp_path / "data" / "agents")
    assert (Path(second["path"]) / "CLAUDE.md").read_text() == "second prompt"


def test_deployed_agent_is_a_copy_independent_of_its_source(client, tmp_path: Path) -> None:
    folder = make_agent_folder(tmp_path, "copied")
    agent = deploy(client, "copied", folder)
    (folder / "CLAUDE.md").unlink()
    assert (Path(agent["path"]) / "CLAUDE.md").is_file()
    session = create_session(client, "copied")
    assert send_message(client, session["id"], "hi")[-1].event == "done"


def test_get_list_and_delete_agent(client, agent_folder: Path) -> None:
    deploy(client, "echo", agent_folder)
    assert [a["name"] for a in client.get("/api/agents").json()["agents"]] == ["echo"]
    shown = client.get("/api/agents/echo").json()["agent"]
    assert shown["config"] == {"backend": "mock"}
    deleted = client.delete("/api/agents/echo")
    assert deleted.status_code == 200
    assert not Path(shown["path"]).exists()
    assert client.get("/api/agents/echo").status_code == 404
    assert client.post("/api/sessions", json={"agent": "echo"}).status_code == 404


def test_agent_can_be_deleted_once_its_sessions_ended(client, session) -> None:
    client.delete(f"/api/sessions/{session['id']}")
    assert client.delete("/api/agents/echo").status_code == 200


def test_list_sessions_filters_by_agent_and_status_and_pages(
    client, agent_folder: Path, tmp_path: Path
) -> None:
    deploy(client, "echo", agent_folder)
    deploy(client, "other", make_agent_folder(tmp_path, "other"))
    ids = [create_session(client, "echo")["id"] for _ in range(3)]
    other = create_session(client, "other")["id"]
    client.post(f"/api/sessions/{ids[0]}/pause")

    def listed(**params: object) -> list[str]:
        return [s["id"] for s in client.get("/api/sessions", params=params).json()["sessions"]]

    assert set(listed(agent="echo")) == set(ids)
    assert listed(agent="other") == [other]
    assert listed(status="paused") == [ids[0]]
    assert len(listed(limit=2)) == 2
    assert set(listed(limit=2)) | set(listed(limit=2, offset=2)) == {*ids, other}


def test_get_session_shows_turns_and_last_event_id(client, session) -> None:
    events = send_message(client, session["id"], "count me")
    shown = client.get(f"/api/sessions/{session['id']}").json()["session"]
    assert shown["turns"] == 1
    assert shown["lastEventId"] == events[-1].id
    assert shown["runnerId"] is None


def test_interrupt_ends_the_running_turn_early(client, session) -> None:
    sid = session["id"]
    with client.stream("POST", f"/api/sessions/{sid}/messages", json={
            "content": "long", "options": {"tokenIntervalMs": 50, "tokens": 200}}) as response:
        chunks = response.iter_raw()
        head = next(chunks)
        assert client.post(f"/api/sessions/{sid}/interrupt").status_code == 200
        events = parse_sse([head, *chunks])
    assert events[-1].event == "done"
    assert events[-1].data["status"] == "interrupted"
    assert sum(e.event == "text_delta" for e in events) < 200
    assert send_message(client, sid, "after")[-1].data["status"] == "ok"


def test_health_counts_sessions_and_live_sandboxes(client, session) -> None:
    health = httpx.get(client.base_url.join("/health")).json()
    assert health["sessions"] == {"active": 1}
    assert health["sandboxes"]["live"] == 1


def test_demo_flag_deploys_a_working_demo_agent(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_args=["--demo"]).start()
    try:
        with make_client(gateway) as client:
            agent = client.get("/api/agents/demo").json()["agent"]
            assert agent["config"]["backend"] == "mock"
            session = create_session(client, "demo")
            events = send_message(client, session["id"], "hello demo")
            assert "hello demo" in assistant_text(events)
    finally:
        gateway.stop()


def test_data_dir_can_come_from_the_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-env"
    gateway = GatewayProcess(data_dir, extra_env={"ASH_DATA_DIR": str(data_dir)},
                             data_dir_flag=False).start()
    try:
        assert (data_dir / "ash.db").is_file()
        assert any(str(data_dir) in line for line in gateway.banner)
    finally:
        gateway.stop()


def _without_ash_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}


def test_runner_binary_exists_and_asks_for_its_gateway() -> None:
    binary = shutil.which("ash-runner")
    assert binary is not None, "the ash-runner console script is not installed"
    result = subprocess.run([binary], capture_output=True, text=True, timeout=30,
                            env=_without_ash_env())
    assert result.returncode == 2
    assert "--gateway HOST:PORT (or ASH_GATEWAY) is required" in result.stderr


def test_coordinator_mode_is_refused_clearly_without_the_internal_secret() -> None:
    binary = shutil.which("ash-gateway")
    assert binary is not None, "the ash-gateway console script is not installed"
    result = subprocess.run([binary, "--mode", "coordinator"],
                            capture_output=True, text=True, timeout=30, env=_without_ash_env())
    assert result.returncode == 2
    assert "coordinator mode needs ASH_INTERNAL_SECRET" in result.stderr


def test_agent_without_a_backend_falls_back_to_mock_with_a_notice(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_env={"ANTHROPIC_API_KEY": ""}).start()
    try:
        with make_client(gateway) as client:
            deploy(client, "unset", make_agent_folder(tmp_path, "unset", {"mock": {}}))
            deploy(client, "chosen", make_agent_folder(tmp_path, "chosen", {"backend": "mock"}))
            fallback = client.post("/api/sessions", json={"agent": "unset"}).json()
            chosen = client.post("/api/sessions", json={"agent": "chosen"}).json()
        assert "runs the mock agent" in fallback["notice"]
        assert "notice" not in chosen
    finally:
        gateway.stop()
