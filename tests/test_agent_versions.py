"""Agent versions (`/api/agents/{name}/versions…`): numbered per agent, one active; the
active version's system prompt is what a new session runs (a session's own wins)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from bench.model_stub import StubProcess
from gateway.store import Store
from tests.conftest import deploy, send_message
from tests.gateway_process import GatewayProcess
from tests.test_claude_backend import SYSTEM_PROMPT_MARK, claude_agent
from tests.test_claude_session_options import SESSION_PROMPT, model_calls, session_with

VERSION_PROMPT = "You are version two of this agent."
VERSIONS = "/api/agents/echo/versions"


@pytest.fixture
def echo(client: httpx.Client, agent_folder: Path) -> str:
    deploy(client, "echo", agent_folder)
    return "echo"


def create(client: httpx.Client, agent: str = "echo", **body: object) -> dict:
    response = client.post(f"/api/agents/{agent}/versions", json=body)
    assert response.status_code == 201, response.text
    return response.json()["version"]


def activate(client: httpx.Client, number: int, agent: str = "echo") -> None:
    response = client.post(f"/api/agents/{agent}/versions/{number}/activate")
    assert response.status_code == 200, response.text
    assert response.json() == {"activated": True, "versionNumber": number}


def test_versions_are_numbered_per_agent_with_the_reference_fields(
    client: httpx.Client, echo: str
) -> None:
    first = create(client, systemPrompt="one", releaseNotes="first", knowledgeFiles=["a.md"])
    second = create(client)
    assert first["versionNumber"] == 1 and second["versionNumber"] == 2
    assert set(first) == {"id", "tenantId", "agentName", "versionNumber", "name",
                          "systemPrompt", "releaseNotes", "isActive", "knowledgeFiles",
                          "createdBy", "createdAt", "updatedAt"}
    assert first["agentName"] == "echo" and first["tenantId"] == "default"
    assert first["knowledgeFiles"] == ["a.md"] and not first["isActive"]
    assert second["name"] == "v2" and second["systemPrompt"] is None
    uuid.UUID(first["id"])
    listed = client.get(VERSIONS).json()["versions"]
    assert [v["versionNumber"] for v in listed] == [1, 2]


def test_clone_copies_another_version_by_number_or_id(client: httpx.Client, echo: str) -> None:
    source = create(client, systemPrompt="cloned", releaseNotes="notes",
                    knowledgeFiles=["k.md"])
    by_number = create(client, cloneFrom=1, releaseNotes="mine")
    assert by_number["systemPrompt"] == "cloned" and by_number["releaseNotes"] == "mine"
    by_id = create(client, cloneFrom=source["id"])
    assert by_id["knowledgeFiles"] == ["k.md"] and by_id["versionNumber"] == 3


def test_activate_makes_exactly_one_version_active(client: httpx.Client, echo: str) -> None:
    create(client)
    create(client)
    activate(client, 1)
    activate(client, 2)
    active = [v["versionNumber"] for v in client.get(VERSIONS).json()["versions"]
              if v["isActive"]]
    assert active == [2]
    assert client.get(f"{VERSIONS}/2").json()["version"]["isActive"] is True


def test_patch_changes_the_given_fields_and_null_clears(client: httpx.Client, echo: str) -> None:
    create(client, systemPrompt="before", releaseNotes="notes")
    patched = client.patch(f"{VERSIONS}/1", json={"name": "renamed", "releaseNotes": None})
    assert patched.status_code == 200, patched.text
    version = patched.json()["version"]
    assert version["name"] == "renamed" and version["releaseNotes"] is None
    assert version["systemPrompt"] == "before"


def test_delete_removes_a_version_but_refuses_the_active_one(
    client: httpx.Client, echo: str
) -> None:
    create(client)
    create(client)
    activate(client, 2)
    refused = client.delete(f"{VERSIONS}/2")
    assert refused.status_code == 409, refused.text
    assert refused.json()["statusCode"] == 409
    deleted = client.delete(f"{VERSIONS}/1")
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"{VERSIONS}/1").status_code == 404
    assert [v["versionNumber"] for v in client.get(VERSIONS).json()["versions"]] == [2]


def test_deleting_the_agent_deletes_its_versions(
    client: httpx.Client, echo: str, agent_folder: Path
) -> None:
    create(client)
    assert client.delete("/api/agents/echo").status_code == 200
    deploy(client, "echo", agent_folder)
    assert client.get(VERSIONS).json()["versions"] == []


@pytest.mark.parametrize(("body", "message"), [
    ({"name": 5}, "`name` must be a string"),
    ({"name": "  "}, "`name` must not be empty"),
    ({"name": None}, "`name` must be a string"),
    ({"systemPrompt": ["x"]}, "`systemPrompt` must be a string"),
    ({"systemPrompt": "x" * 100_001}, "longer than"),
    ({"knowledgeFiles": "a.md"}, "`knowledgeFiles` must be an array"),
    ({"knowledgeFiles": [""]}, "`knowledgeFiles` must be an array"),
    ({"cloneFrom": "not-a-uuid"}, "`cloneFrom` must be"),
    ({"cloneFrom": 0}, "`cloneFrom` must be"),
    ({"cloneFrom": True}, "`cloneFrom` must be"),
    ({"bogus": 1}, "unknown field(s): bogus"),
])
def test_bad_create_bodies_get_400_and_create_nothing(
    client: httpx.Client, echo: str, body: dict, message: str
) -> None:
    response = client.post(VERSIONS, json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert client.get(VERSIONS).json()["versions"] == []


def test_unknown_agents_versions_and_clone_sources_get_404(
    client: httpx.Client, echo: str
) -> None:
    assert client.get("/api/agents/nobody/versions").status_code == 404
    assert client.post("/api/agents/nobody/versions", json={}).status_code == 404
    assert client.post(VERSIONS, json={"cloneFrom": 7}).status_code == 404
    assert client.post(VERSIONS, json={"cloneFrom": str(uuid.uuid4())}).status_code == 404
    for method in ("GET", "PATCH", "DELETE"):
        assert client.request(method, f"{VERSIONS}/9", json={}).status_code == 404
    assert client.post(f"{VERSIONS}/9/activate").status_code == 404
    assert client.get(VERSIONS).json()["versions"] == []


@pytest.mark.parametrize("number", ["0", "x", "1.5", "-1", "99999999999999999999"])
def test_a_version_number_that_is_not_a_positive_integer_gets_400(
    client: httpx.Client, echo: str, number: str
) -> None:
    create(client)
    response = client.get(f"{VERSIONS}/{number}")
    assert response.status_code == 400, response.text
    assert "`versionNumber`" in response.json()["error"]
    assert client.post(f"{VERSIONS}/{number}/activate").status_code == 400
    assert client.get(f"{VERSIONS}/1").json()["version"]["isActive"] is False


def test_a_bad_patch_changes_nothing(client: httpx.Client, echo: str) -> None:
    before = create(client, systemPrompt="kept")
    for body in ({"systemPrompt": 3}, {"name": ""}, {"isActive": True}):
        response = client.patch(f"{VERSIONS}/1", json=body)
        assert response.status_code == 400, response.text
    assert client.get(f"{VERSIONS}/1").json()["version"] == before


def test_versions_are_scoped_by_tenant(tmp_path: Path) -> None:
    store = Store(tmp_path / "ash.db")
    store.insert_agent_version("other", "echo", {"system_prompt": "theirs"})
    store.activate_agent_version("other", "echo", 1)
    assert store.list_agent_versions("default", "echo") == []
    assert store.active_agent_version("default", "echo") is None
    assert not store.activate_agent_version("default", "echo", 1)
    assert store.active_agent_version("other", "echo") is not None


class TestActiveVersionPrompt:
    """With the Claude backend against the model stub: what the model is sent."""

    @pytest.fixture
    def gateway(self, model_gateway: GatewayProcess) -> GatewayProcess:
        return model_gateway

    @pytest.fixture
    def agent(self, client: httpx.Client, tmp_path: Path, stub: StubProcess) -> str:
        return claude_agent(client, tmp_path, stub)

    def test_a_new_session_runs_the_active_versions_prompt(
        self, client: httpx.Client, agent: str, stub: StubProcess
    ) -> None:
        create(client, agent, systemPrompt=VERSION_PROMPT)
        activate(client, 1, agent)
        sid = session_with(client, agent)
        assert send_message(client, sid, "hello")[-1].data["status"] == "ok"
        system = str(model_calls(stub)[-1]["body"]["system"])
        assert VERSION_PROMPT in system
        assert SYSTEM_PROMPT_MARK not in system

    def test_a_sessions_own_prompt_wins_over_the_version(
        self, client: httpx.Client, agent: str, stub: StubProcess
    ) -> None:
        create(client, agent, systemPrompt=VERSION_PROMPT)
        activate(client, 1, agent)
        sid = session_with(client, agent, systemPrompt=SESSION_PROMPT)
        send_message(client, sid, "hello")
        system = str(model_calls(stub)[-1]["body"]["system"])
        assert SESSION_PROMPT in system and VERSION_PROMPT not in system

    def test_without_an_active_version_claude_md_is_the_prompt(
        self, client: httpx.Client, agent: str, stub: StubProcess
    ) -> None:
        create(client, agent, systemPrompt=VERSION_PROMPT)
        sid = session_with(client, agent)
        send_message(client, sid, "hello")
        system = str(model_calls(stub)[-1]["body"]["system"])
        assert SYSTEM_PROMPT_MARK in system and VERSION_PROMPT not in system
