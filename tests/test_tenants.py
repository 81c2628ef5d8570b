"""Tenants and API keys: every key maps to a tenant, and a tenant can neither see nor
touch another's agents, sessions, events, files or keys — a foreign id answers exactly
like an unknown one (404, the same body). Keys are kept only as HMACs."""

from __future__ import annotations

import base64
import hashlib
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest

from gateway.api.operation import path_parameters
from gateway.api.table import OPERATIONS
from gateway.store import MIGRATIONS, Store
from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.split_cluster import SECRET, Cluster

INTERNAL_SECRET = "tenants-internal-secret"
FILE_CONTENT = base64.b64encode(b"alpha's notes").decode()


def internal_key(gateway: GatewayProcess, tenant: str, label: str = "") -> dict[str, Any]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        response = client.post("/api/internal/api-keys", json={"tenantId": tenant, "label": label},
                               headers={"authorization": f"Bearer {INTERNAL_SECRET}"})
    assert response.status_code == 201, response.text
    return response.json()


def tenant_client(gateway: GatewayProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, http1=False, http2=True, timeout=30,
                        headers={"authorization": f"Bearer {key}"})


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "data",
                             extra_env={"ASH_INTERNAL_SECRET": INTERNAL_SECRET}).start()
    try:
        yield process
    finally:
        process.stop()


@dataclass
class Tenant:
    name: str
    key_id: str
    client: httpx.Client


@pytest.fixture
def alpha(gateway: GatewayProcess) -> Iterator[Tenant]:
    made = internal_key(gateway, "alpha")
    with tenant_client(gateway, made["key"]) as client:
        yield Tenant("alpha", made["id"], client)


@pytest.fixture
def beta(gateway: GatewayProcess) -> Iterator[Tenant]:
    made = internal_key(gateway, "beta")
    with tenant_client(gateway, made["key"]) as client:
        yield Tenant("beta", made["id"], client)


@dataclass
class Owned:
    """What tenant A owns, by the kind of id a path names it with."""

    agent: str
    session: str
    file: str
    key: str
    queue: str
    attachment: str
    credential: str


def populate(tenant: Tenant, tmp_path: Path) -> Owned:
    """An agent, a session with a finished turn and a file, and a second key."""
    deploy(tenant.client, "echo", make_agent_folder(tmp_path / tenant.name))
    session = create_session(tenant.client, "echo")
    assert send_message(tenant.client, session["id"], "hello")[-1].event == "done"
    written = tenant.client.post(f"/api/sessions/{session['id']}/files",
                                 json={"files": [{"path": "notes.txt", "content": FILE_CONTENT}]})
    assert written.status_code == 200, written.text
    key = tenant.client.post("/api/api-keys", json={"label": "second"})
    assert key.status_code == 201, key.text
    attachment = tenant.client.post(f"/api/sessions/{session['id']}/attachments",
                                    json={"filename": "a.txt", "content": FILE_CONTENT})
    assert attachment.status_code == 201, attachment.text
    credential = tenant.client.post("/api/credentials",
                                    json={"type": "anthropic", "key": "sk-ant-tenant"})
    assert credential.status_code == 201, credential.text
    return Owned("echo", session["id"], "notes.txt", key.json()["id"],
                 queued_and_done(tenant, session["id"]), attachment.json()["attachment"]["id"],
                 credential.json()["credential"]["id"])


def queued_and_done(tenant: Tenant, session_id: str) -> str:
    """A queue item run on the tenant's session, waited for (so its state stays put)."""
    item = tenant.client.post("/api/queue", json={"agentName": "echo", "prompt": "queued",
                                                  "sessionId": session_id})
    assert item.status_code == 201, item.text
    item_id = item.json()["item"]["id"]
    deadline = time.monotonic() + 30
    while tenant.client.get(f"/api/queue/{item_id}").json()["item"]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return item_id


STATE_READS = (
    "/api/agents", "/api/agents/{agent}", "/api/agents/{agent}/config",
    "/api/agents/{agent}/files", "/api/agents/{agent}/files/CLAUDE.md", "/api/sessions",
    "/api/sessions/{session}", "/api/sessions/{session}/events",
    "/api/sessions/{session}/messages", "/api/sessions/{session}/stream/events",
    "/api/sessions/{session}/files", "/api/sessions/{session}/files/{file}?format=json",
    "/api/api-keys", "/api/queue/{queue}", "/api/queue", "/api/sessions/{session}/attachments",
    "/api/credentials", "/api/agents/{agent}/versions",
)


def state_of(tenant: Tenant, owned: Owned) -> dict[str, Any]:
    """Everything the tenant can read of what it owns."""
    state = {}
    for template in STATE_READS:
        path = template.format(**vars(owned))
        response = tenant.client.get(path)
        assert response.status_code == 200, (path, response.text)
        state[path] = response.json()
    return state


# The isolation walk: every operation with a path parameter, tried by tenant B with tenant
# A's ids. The kind of id a path names is told by its prefix: a helper adding a resource
# with ids (credentials, queue items, attachments, ...) adds its prefix here, with the
# owned object its test fixture makes; an operation whose prefix is missing fails the walk.
ID_KINDS: dict[str, str] = {
    "/api/sessions/": "session",
    "/api/agents/": "agent",
    "/api/api-keys/": "key",
    "/api/runners/": "shared",
    "/api/queue/": "queue",
    "/api/attachments/": "attachment",
    "/api/credentials/": "credential",
}
"""Path prefix (up to its first parameter) -> the attribute of `Owned` it names, or
"shared": infrastructure no tenant owns (runners), which only the default tenant may touch
(403 for another)."""
UNKNOWN_IDS = {"session": str(uuid.uuid4()), "agent": "no-such-agent", "key": "key_nosuch",
               "queue": str(uuid.uuid4()), "attachment": str(uuid.uuid4()),
               "credential": str(uuid.uuid4())}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/sessions/{id}/messages"): {"content": "hi"},
    ("POST", "/api/sessions/{id}/exec"): {"command": "echo x"},
    ("PATCH", "/api/sessions/{id}/config"): {"model": "claude-sonnet-4-5"},
    ("POST", "/api/sessions/{id}/files"): {"files": [{"path": "b.txt", "content": FILE_CONTENT}]},
    ("POST", "/api/sessions/{id}/workspace"): {"bundle": FILE_CONTENT},
    ("PATCH", "/api/agents/{name}"): {"env": {"TONE": "dry"}},
    ("PATCH", "/api/agents/{name}/config"): {"description": "changed"},
    ("POST", "/api/agents/{name}/files"): {"files": [{"path": "b.md", "content": FILE_CONTENT}]},
    ("POST", "/api/sessions/{id}/attachments"): {"filename": "b.txt", "content": FILE_CONTENT},
    ("POST", "/api/agents/{name}/versions"): {"systemPrompt": "You are someone else."},
    ("PATCH", "/api/agents/{name}/versions/{versionNumber}"): {"name": "renamed"},
}
"""A valid body for each operation that takes one (else `{}`): a 404 must not hide
behind a 400 for the body."""

FOREIGN_ID_OPERATIONS = [op for op in OPERATIONS
                         if op.path.startswith("/api/") and path_parameters(op.path)]


def kind_of(template: str) -> str:
    prefix = template[:template.index("{")]
    assert prefix in ID_KINDS, (
        f"{template}: the tenant-isolation walk does not know what `{prefix}...` names; add "
        "its prefix to ID_KINDS in tests/test_tenants.py (and a row of it to `populate`)")
    return ID_KINDS[prefix]


def concrete(template: str, ids: dict[str, str], file: str) -> str:
    kind = kind_of(template)
    own = ids.get(kind, "some-runner")
    path = template.replace("{path+}", file)
    for parameter in path_parameters(template):
        if parameter != "path":
            path = path.replace(f"{{{parameter}}}", own, 1)
    return path


def test_every_operation_with_an_id_is_in_the_walk() -> None:
    assert len(FOREIGN_ID_OPERATIONS) >= 25
    for op in FOREIGN_ID_OPERATIONS:
        kind_of(op.path)


def test_another_tenants_ids_answer_404_like_unknown_ones_and_change_nothing(
        alpha: Tenant, beta: Tenant, tmp_path: Path) -> None:
    owned = populate(alpha, tmp_path)
    before = state_of(alpha, owned)
    foreign = {"session": owned.session, "agent": owned.agent, "key": owned.key,
               "queue": owned.queue, "attachment": owned.attachment,
               "credential": owned.credential}
    answers = {}
    for op in FOREIGN_ID_OPERATIONS:
        body = BODIES.get((op.method, op.path), {})
        kind = kind_of(op.path)
        path = concrete(op.path, foreign, owned.file)
        response = beta.client.request(op.method, path, json=body)
        answers[(op.method, op.path)] = response.status_code
        if kind == "shared":
            assert response.status_code == 403, (op.method, path, response.text)
            continue
        assert response.status_code == 404, (op.method, path, response.text)
        unknown = beta.client.request(op.method, concrete(op.path, UNKNOWN_IDS, owned.file),
                                      json=body)
        assert unknown.status_code == 404
        assert (response.json()["error"].replace(foreign[kind], "?")
                == unknown.json()["error"].replace(UNKNOWN_IDS[kind], "?")), (op.method, path)
    assert state_of(alpha, owned) == before
    assert len(answers) == len(FOREIGN_ID_OPERATIONS)


def test_a_tenant_lists_only_its_own_agents_sessions_and_keys(
        alpha: Tenant, beta: Tenant, tmp_path: Path) -> None:
    populate(alpha, tmp_path)
    assert beta.client.get("/api/agents").json() == {"agents": []}
    assert beta.client.get("/api/sessions").json() == {"sessions": []}
    assert beta.client.get("/api/sessions", params={"agent": "echo"}).json() == {"sessions": []}
    assert [key["id"] for key in beta.client.get("/api/api-keys").json()["keys"]] \
        == [beta.key_id]


def test_a_session_of_another_tenants_agent_cannot_be_created(
        alpha: Tenant, beta: Tenant, tmp_path: Path) -> None:
    deploy(alpha.client, "echo", make_agent_folder(tmp_path))
    refused = beta.client.post("/api/sessions", json={"agent": "echo"})
    assert refused.status_code == 404
    assert refused.json() == {"error": "agent not found: echo", "statusCode": 404}


def test_records_show_their_tenant(alpha: Tenant, tmp_path: Path) -> None:
    owned = populate(alpha, tmp_path)
    agent = alpha.client.get(f"/api/agents/{owned.agent}").json()["agent"]
    session = alpha.client.get(f"/api/sessions/{owned.session}").json()["session"]
    messages = alpha.client.get(f"/api/sessions/{owned.session}/messages").json()["messages"]
    timeline = alpha.client.get(f"/api/sessions/{owned.session}/events").json()["events"]
    assert agent["tenantId"] == session["tenantId"] == "alpha"
    assert messages and {m["tenantId"] for m in messages} == {"alpha"}
    assert timeline and {e["tenantId"] for e in timeline} == {"alpha"}


def test_two_tenants_deploy_echo_independently(
        gateway: GatewayProcess, alpha: Tenant, beta: Tenant, tmp_path: Path) -> None:
    with make_client(gateway) as default:
        mine = deploy(default, "echo", make_agent_folder(tmp_path / "default"))
    ours = deploy(alpha.client, "echo", make_agent_folder(tmp_path / "a", config={
        "backend": "mock", "description": "alpha's"}))
    theirs = deploy(beta.client, "echo", make_agent_folder(tmp_path / "b"))
    assert len({mine["path"], ours["path"], theirs["path"]}) == 3
    assert len({mine["id"], ours["id"], theirs["id"]}) == 3
    agents_dir = gateway.data_dir.resolve() / "agents"
    assert Path(mine["path"]) == agents_dir / "echo"
    assert Path(ours["path"]) == agents_dir / ".tenants" / "alpha" / "echo"
    assert alpha.client.get("/api/agents/echo/config").json()["config"]["description"] \
        == "alpha's"
    assert "description" not in beta.client.get("/api/agents/echo/config").json()["config"]
    for tenant in (alpha, beta):
        session = create_session(tenant.client, "echo")
        assert send_message(tenant.client, session["id"], "hi")[-1].event == "done"
        assert tenant.client.delete(f"/api/sessions/{session['id']}").status_code == 200
    assert alpha.client.delete("/api/agents/echo").status_code == 200
    assert beta.client.get("/api/agents/echo").json()["agent"]["id"] == theirs["id"]
    assert Path(theirs["path"]).is_dir() and not Path(ours["path"]).exists()


def test_keys_are_never_stored_in_plain_text(gateway: GatewayProcess, alpha: Tenant) -> None:
    made = alpha.client.post("/api/api-keys", json={"label": "x"}).json()
    other = internal_key(gateway, "gamma")
    listed = alpha.client.get("/api/api-keys").json()["keys"]
    assert all("key" not in entry for entry in listed)
    prefix = next(entry["keyPrefix"] for entry in listed if entry["id"] == made["id"])
    assert made["key"].startswith(prefix) and len(prefix) <= 8
    stored = b"".join(path.read_bytes() for path in gateway.data_dir.glob("ash.db*"))
    for key in (made["key"], other["key"], gateway.api_key):
        assert key.encode() not in stored
        assert hashlib.sha256(key.encode()).hexdigest().encode() not in stored


def test_a_revoked_key_is_refused(gateway: GatewayProcess, alpha: Tenant) -> None:
    made = alpha.client.post("/api/api-keys", json={"label": "short-lived"}).json()
    with tenant_client(gateway, made["key"]) as client:
        assert client.get("/api/agents").status_code == 200
        revoked = alpha.client.delete(f"/api/api-keys/{made['id']}")
        assert revoked.status_code == 204 and revoked.content == b""
        refused = client.get("/api/agents")
    assert refused.status_code == 401
    assert made["id"] not in {key["id"] for key in alpha.client.get("/api/api-keys").json()["keys"]}
    assert alpha.client.delete(f"/api/api-keys/{made['id']}").status_code == 404


def test_a_tenant_may_revoke_the_key_it_calls_with(gateway: GatewayProcess, alpha: Tenant) -> None:
    assert alpha.client.delete(f"/api/api-keys/{alpha.key_id}").status_code == 204
    assert alpha.client.get("/api/agents").status_code == 401


def test_the_env_key_is_listed_as_env_and_cannot_be_revoked(gateway: GatewayProcess) -> None:
    with make_client(gateway) as client:
        keys = client.get("/api/api-keys").json()["keys"]
        assert [(key["id"], key["label"]) for key in keys] == [("env", "ASH_API_KEY")]
        refused = client.delete("/api/api-keys/env")
        assert refused.status_code == 409
        assert "ASH_API_KEY" in refused.json()["error"]
        assert client.get("/api/agents").status_code == 200


def test_a_tenant_named_env_has_no_env_key_to_revoke(gateway: GatewayProcess) -> None:
    with tenant_client(gateway, internal_key(gateway, "other")["key"]) as client:
        assert client.delete("/api/api-keys/env").status_code == 404


@pytest.mark.parametrize("body", [
    {}, {"tenantId": ""}, {"tenantId": 5}, {"tenantId": "../etc"}, {"tenantId": "a/b"},
    {"tenantId": ".hidden"}, {"tenantId": "x" * 65}, {"tenantId": "ok", "label": 5},
    {"tenantId": "ok", "label": "x" * 201}, {"tenantId": "ok", "label": "bad\nlabel"},
])
def test_internal_key_route_refuses_bad_input(gateway: GatewayProcess, body: dict) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30,
                      headers={"authorization": f"Bearer {INTERNAL_SECRET}"}) as client:
        response = client.post("/api/internal/api-keys", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["statusCode"] == 400
        assert client.post("/api/internal/api-keys", content=b"[1]").status_code == 400
    with make_client(gateway) as client:
        assert [key["id"] for key in client.get("/api/api-keys").json()["keys"]] == ["env"]


@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong", f"Bearer {INTERNAL_SECRET}x", f"Basic {INTERNAL_SECRET}"])
def test_internal_key_route_needs_the_internal_secret(
        gateway: GatewayProcess, authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        response = client.post("/api/internal/api-keys", json={"tenantId": "x"}, headers=headers)
    assert response.status_code == 401
    assert "ASH_INTERNAL_SECRET" in response.json()["error"]


def test_an_api_key_does_not_open_the_internal_route(gateway: GatewayProcess) -> None:
    with make_client(gateway) as client:
        response = client.post("/api/internal/api-keys", json={"tenantId": "x"})
    assert response.status_code == 401


def test_internal_route_is_disabled_without_an_internal_secret(tmp_path: Path) -> None:
    process = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(process) as client:
            refused = client.post("/api/internal/api-keys", json={"tenantId": "x"})
            unauthenticated = client.post("/api/internal/api-keys", json={"tenantId": "x"},
                                          headers={"authorization": "Bearer nope"})
    finally:
        process.stop()
    assert refused.status_code == 404
    assert "no ASH_INTERNAL_SECRET" in refused.json()["error"]
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize("body", [{"label": 5}, {"label": "x" * 201}, {"label": "a\x00b"}])
def test_create_key_refuses_bad_input(gateway: GatewayProcess, body: dict) -> None:
    with make_client(gateway) as client:
        assert client.post("/api/api-keys", json=body).status_code == 400
        assert client.post("/api/api-keys", content=b"not json").status_code == 400
        assert client.delete("/api/api-keys/" + "k" * 300).status_code == 404
        assert len(client.get("/api/api-keys").json()["keys"]) == 1


def test_runners_are_the_operators_alone(gateway: GatewayProcess, alpha: Tenant) -> None:
    assert alpha.client.get("/api/runners").status_code == 403
    with make_client(gateway) as client:
        assert client.get("/api/runners").status_code == 200


def test_the_generated_key_secret_is_kept_private_and_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"ASH_INTERNAL_SECRET": INTERNAL_SECRET}
    first = GatewayProcess(data, extra_env=env).start()
    try:
        made = internal_key(first, "alpha")
    finally:
        first.stop()
    secret_file = data / "key_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_bytes()
    again = GatewayProcess(data, extra_env=env).start()
    try:
        with tenant_client(again, made["key"]) as client:
            assert client.get("/api/agents").status_code == 200
    finally:
        again.stop()
    assert secret_file.read_bytes() == secret


def test_a_configured_key_secret_is_used_and_changing_it_voids_stored_keys(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"ASH_INTERNAL_SECRET": INTERNAL_SECRET, "ASH_KEY_SECRET": "one-secret-" * 4}
    first = GatewayProcess(data, extra_env=env).start()
    try:
        made = internal_key(first, "alpha")
    finally:
        first.stop()
    assert not (data / "key_secret").exists()
    same = GatewayProcess(data, extra_env=env).start()
    try:
        with tenant_client(same, made["key"]) as client:
            assert client.get("/api/agents").status_code == 200
    finally:
        same.stop()
    changed = GatewayProcess(data, extra_env={**env, "ASH_KEY_SECRET": "two-secret-" * 4}).start()
    try:
        with tenant_client(changed, made["key"]) as client:
            assert client.get("/api/agents").status_code == 401
        with make_client(changed) as client:  # the env key is hashed again at start
            assert client.get("/api/agents").status_code == 200
    finally:
        changed.stop()


def test_a_key_generated_before_tenants_keeps_working(tmp_path: Path) -> None:
    """A gateway before tenants kept a generated key as a plain sha256 in settings."""
    data = tmp_path / "data"
    data.mkdir()
    key = "ash_generated_before_tenants_0123456789"
    store = Store(data / "ash.db")
    store.set_setting("api_key_sha256", hashlib.sha256(key.encode()).hexdigest())
    store.close()
    gateway = GatewayProcess(data, api_key=None).start()
    try:
        assert not any(line.startswith("API key: ash_") for line in gateway.banner)
        with tenant_client(gateway, key) as client:
            assert client.get("/api/agents").status_code == 200
            assert [k["id"] for k in client.get("/api/api-keys").json()["keys"]] == ["env"]
        with tenant_client(gateway, "wrong") as client:
            assert client.get("/api/agents").status_code == 401
    finally:
        gateway.stop()
    store = Store(data / "ash.db")
    assert store.get_setting("api_key_sha256") is None
    store.close()
    again = GatewayProcess(data, api_key=None).start()
    try:
        with tenant_client(again, key) as client:
            assert client.get("/api/agents").status_code == 200
    finally:
        again.stop()


def test_rows_from_before_tenants_become_the_default_tenants(tmp_path: Path) -> None:
    path = tmp_path / "ash.db"
    db = apsw.Connection(str(path))
    before_tenants = MIGRATIONS.index(next(m for m in MIGRATIONS if "api_keys" in m))
    for version, script in enumerate(MIGRATIONS[:before_tenants], start=1):
        db.execute(script)
        db.execute(f"PRAGMA user_version={version}")
    db.execute("INSERT INTO agents (name, path, version, config, created_at, updated_at, id) "
               "VALUES ('echo', '/a/echo', 3, '{}', 1, 2, 'agent-id')")
    db.execute("INSERT INTO sessions (id, agent, agent_version, status, created_at, updated_at) "
               "VALUES ('s1', 'echo', 3, 'paused', 1, 2)")
    db.close()
    store = Store(path)
    agent = store.get_agent("echo")
    assert agent is not None
    assert (agent.tenant_id, agent.id, agent.version, agent.path) == \
        ("default", "agent-id", 3, "/a/echo")
    assert store.get_session("s1", "default") is not None
    assert store.get_session("s1", "alpha") is None
    assert store.get_agent("echo", "alpha") is None
    store.upsert_agent("echo", "/b/echo", "{}", "alpha")
    assert store.get_agent("echo").path == "/a/echo"
    store.close()


def test_via_a_runner_each_tenants_echo_runs_its_own_folder(tmp_path: Path) -> None:
    """Runners are shared: one runner runs both tenants' `echo`, each from its own folder."""
    with Cluster(tmp_path).start() as cluster:
        cluster.add_runner("shared")
        cluster.wait_for_runners("shared")
        gateway = cluster.gateway
        clients = {}
        for tenant in ("alpha", "beta"):
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                made = client.post("/api/internal/api-keys", json={"tenantId": tenant},
                                   headers={"authorization": f"Bearer {SECRET}"})
            assert made.status_code == 201, made.text
            clients[tenant] = tenant_client(gateway, made.json()["key"])
        try:
            for tenant, client in clients.items():
                folder = make_agent_folder(tmp_path / tenant)
                (folder / "CLAUDE.md").write_text(f"# {tenant}'s echo\n")
                deploy(client, "echo", folder)
            for tenant, client in clients.items():
                session = create_session(client, "echo")
                assert session["tenantId"] == tenant and session["runnerId"] == "shared"
                assert send_message(client, session["id"], "hi")[-1].event == "done"
                ran = client.post(f"/api/sessions/{session['id']}/exec",
                                  json={"command": "cat /agent/CLAUDE.md"})
                assert ran.status_code == 200, ran.text
                assert ran.json()["stdout"] == f"# {tenant}'s echo\n"
                assert clients["beta" if tenant == "alpha" else "alpha"].get(
                    f"/api/sessions/{session['id']}").status_code == 404
        finally:
            for client in clients.values():
                client.close()


def test_an_unusable_key_secret_file_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "key_secret").write_bytes(b"short")
    with pytest.raises(RuntimeError, match=r"exited 2: .*holds no key secret"):
        GatewayProcess(data).start()
