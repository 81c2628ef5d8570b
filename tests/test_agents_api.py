"""The agent routes the reference's clients use (`ash deploy`): deploy by upload, PATCH of
env and config, `/config`, and `/files`, on a real gateway with bwrap sandboxes.

Bad input (missing fields, wrong types, unknown agents, path escapes, oversized bodies) is
a 4xx that changes nothing: the agent keeps its version and its files. A symbolic link
in an agent's folder is never followed. A session created after a change sees it.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_session, deploy, make_agent_folder, make_client
from tests.sandbox_helpers import module_gateway, run, running_gateway
from tests.split_cluster import Cluster

gateway, client = module_gateway("agents")

MIB = 1024 * 1024
MOCK = json.dumps({"backend": "mock"}).encode()


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def upload(files: dict[str, bytes | str]) -> list[dict[str, str]]:
    return [{"path": path, "content": b64(data)} for path, data in files.items()]


@pytest.fixture
def name() -> str:
    return f"up-{uuid.uuid4().hex[:8]}"


def deploy_upload(client: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    response = client.post("/api/agents", json={"name": name, **body})
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()["agent"]
    return agent


def deployed(client: httpx.Client, name: str) -> dict[str, Any]:
    """An agent deployed by upload: CLAUDE.md, a mock agent.json with a secret, a subfolder."""
    return deploy_upload(client, name, env={"TOKEN": "s3cret"}, files=upload({
        "CLAUDE.md": "# uploaded\n", "agent.json": MOCK, "sub/notes.txt": "notes\n"}))


def get_agent(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/api/agents/{name}")
    assert response.status_code == 200, response.text
    agent: dict[str, Any] = response.json()["agent"]
    return agent


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status, body
    for word in words:
        assert word in body["error"], body


def assert_unchanged(client: httpx.Client, agent: dict[str, Any]) -> None:
    """The agent has the version and files it had (`agent` as a deploy returned it)."""
    now = get_agent(client, agent["name"])
    assert now["version"] == agent["version"], now
    assert tree(Path(now["path"])) == agent["files"]


def snapshot(client: httpx.Client, name: str) -> dict[str, Any]:
    agent = deployed(client, name)
    return {**agent, "files": tree(Path(agent["path"]))}


def leftovers(agent_path: str) -> list[str]:
    """The agent's staging and retired folders beside its folder."""
    folder = Path(agent_path)
    return sorted(p.name for p in folder.parent.iterdir()
                  if p.name.startswith((f".staging-{folder.name}-", f".retired-{folder.name}+")))


def no_staging_left(agent_path: str) -> None:
    assert leftovers(agent_path) == []


# deploy by upload


def test_upload_deploy_writes_the_files_as_version_1(client, name) -> None:
    agent = deployed(client, name)
    assert agent["version"] == 1
    assert tree(Path(agent["path"])).keys() == {"CLAUDE.md", "agent.json", "sub/notes.txt"}
    assert (Path(agent["path"]) / "CLAUDE.md").read_text() == "# uploaded\n"
    assert agent["config"]["backend"] == "mock"


def test_upload_deploy_is_readable_by_the_sandbox_user(client, name) -> None:
    agent = deployed(client, name)
    root = Path(agent["path"])
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        assert mode & (stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)), path


def test_upload_without_files_takes_claude_md_from_the_system_prompt(client, name) -> None:
    agent = deploy_upload(client, name, systemPrompt="Be brief.")
    assert tree(Path(agent["path"])) == {"CLAUDE.md": b"Be brief."}


def test_upload_with_nothing_gets_a_placeholder_claude_md(client, name) -> None:
    agent = deploy_upload(client, name)
    assert name in (Path(agent["path"]) / "CLAUDE.md").read_text()


def test_uploaded_claude_md_wins_over_the_system_prompt(client, name) -> None:
    agent = deploy_upload(client, name, systemPrompt="ignored",
                          files=upload({"CLAUDE.md": "from files"}))
    assert (Path(agent["path"]) / "CLAUDE.md").read_text() == "from files"


def test_upload_env_is_stored_in_agent_json_and_redacted_in_responses(client, name) -> None:
    response = client.post("/api/agents", json={
        "name": name, "env": {"TOKEN": "s3cret"}, "files": upload({"agent.json": MOCK})})
    assert response.status_code == 201, response.text
    assert "s3cret" not in response.text
    agent = response.json()["agent"]
    assert agent["env"] == {"TOKEN": "***"}
    assert agent["config"] == {"backend": "mock", "env": {"TOKEN": "***"}}
    stored = json.loads((Path(agent["path"]) / "agent.json").read_text())
    assert stored["env"] == {"TOKEN": "s3cret"}
    assert "s3cret" not in client.get(f"/api/agents/{name}").text
    assert "s3cret" not in client.get("/api/agents").text


def test_redeploy_by_upload_bumps_the_version_and_replaces_the_folder(client, name) -> None:
    deployed(client, name)
    again = deploy_upload(client, name, files=upload({"CLAUDE.md": "v2", "agent.json": MOCK}))
    assert again["version"] == 2
    assert tree(Path(again["path"])) == {"CLAUDE.md": b"v2", "agent.json": MOCK}
    no_staging_left(again["path"])


def test_upload_deploy_takes_a_body_past_the_general_1_mib_limit(client, name) -> None:
    agent = deploy_upload(client, name, files=upload({"big.bin": bytes(3 * MIB)}))
    assert (Path(agent["path"]) / "big.bin").stat().st_size == 3 * MIB


def test_deploy_by_path_with_env_sets_the_copy_s_env(client, name, tmp_path) -> None:
    folder = make_agent_folder(tmp_path, name)
    response = client.post("/api/agents", json={"name": name, "path": str(folder),
                                                "env": {"K": "v"}})
    assert response.status_code == 201, response.text
    agent = response.json()["agent"]
    assert agent["env"] == {"K": "***"}
    assert json.loads((Path(agent["path"]) / "agent.json").read_text())["env"] == {"K": "v"}
    assert json.loads((folder / "agent.json").read_text()) == {"backend": "mock"}


BAD_DEPLOYS: list[tuple[dict[str, Any], str]] = [
    ({"files": upload({"../evil": "x"})}, ".."),
    ({"files": upload({"/etc/evil": "x"})}, "relative"),
    ({"files": upload({"a/../../evil": "x"})}, ".."),
    ({"files": upload({"": "x"})}, "path"),
    ({"files": [{"path": "a.txt", "content": b64("1")}, {"path": "./a.txt", "content": b64("2")}]},
     "second time"),
    ({"files": [{"path": "a.txt", "content": "not base64!"}]}, "base64"),
    ({"files": [{"path": "a.txt"}]}, "content"),
    ({"files": [{"content": b64("x")}]}, "path"),
    ({"files": [{"path": 7, "content": b64("x")}]}, "path"),
    ({"files": ["CLAUDE.md"]}, "object"),
    ({"files": "CLAUDE.md"}, "files"),
    ({"files": []}, "files"),
    ({"files": upload({"agent.json": "{not json"})}, "agent.json"),
    ({"files": upload({"agent.json": "[1]"})}, "agent.json"),
    ({"files": upload({"agent.json": '{"backend": "nope"}'})}, "backend"),
    ({"files": upload({"agent.json": '{"limits": {"memory_mb": -1}}'})}, "agent.json"),
    ({"files": upload({"a": "file", "a/b": "under a file"})}, "a"),
    ({"files": upload({"CLAUDE.md/x": "CLAUDE.md is a folder"})}, "CLAUDE.md"),
    ({"systemPrompt": 5}, "systemPrompt"),
    ({"env": "TOKEN=x"}, "env"),
    ({"env": {"TOKEN": 5}}, "TOKEN"),
    ({"env": {"1BAD": "x"}}, "1BAD"),
    ({"env": {"A": "x\u0000y"}}, "NUL"),
    ({"env": {f"V{i}": "x" for i in range(300)}}, "variables"),
    ({"env": {"BIG": "x" * (32 * 1024 + 1)}}, "BIG"),
    ({"path": "/tmp", "files": upload({"CLAUDE.md": "x"})}, "not both"),
]


@pytest.mark.parametrize(("body", "word"), BAD_DEPLOYS,
                         ids=[f"{i}-{w}" for i, (_, w) in enumerate(BAD_DEPLOYS)])
def test_bad_upload_is_a_400_that_deploys_nothing(client, name, body, word) -> None:
    assert_error(client.post("/api/agents", json={"name": name, **body}), 400, word)
    assert client.get(f"/api/agents/{name}").status_code == 404


@pytest.mark.parametrize("body", [{"files": upload({"x": "y"})}, {"name": 5},
                                  {"name": "a/b"}, {"name": "..x"}])
def test_deploy_without_a_valid_name_is_a_400(client, body) -> None:
    assert_error(client.post("/api/agents", json=body), 400, "name")


@pytest.mark.parametrize(("body", "word"), BAD_DEPLOYS[:3] + BAD_DEPLOYS[16:18])
def test_failed_redeploy_leaves_the_previous_version_whole(client, name, body, word) -> None:
    before = snapshot(client, name)
    assert_error(client.post("/api/agents", json={"name": name, **body}), 400, word)
    assert_unchanged(client, before)
    no_staging_left(before["path"])


def test_bodies_past_the_agent_body_limit_are_413_that_change_nothing(tmp_path) -> None:
    """The limit (50 MiB by default) lowered to 4000 bytes: a deploy and a files write
    past it are refused before anything is written."""
    env = {"ASH_AGENT_MAX_BODY_BYTES": "4000"}
    with running_gateway(tmp_path / "data", extra_env=env) as small, make_client(small) as c:
        big = upload({"big.bin": bytes(3000)})
        assert_error(c.post("/api/agents", json={"name": "small", "files": big}), 413)
        assert c.get("/api/agents/small").status_code == 404
        before = snapshot(c, "small")
        assert_error(c.post("/api/agents/small/files", json={"files": big}), 413)
        assert_unchanged(c, before)
        fits = c.post("/api/agents/small/files", json={"files": upload({"a": bytes(1000)})})
        assert fits.status_code == 200, fits.text


def test_session_after_an_upload_deploy_sees_its_files_and_env(client, name) -> None:
    deployed(client, name)
    deploy_upload(client, name, env={"TOKEN": "second"}, files=upload({
        "CLAUDE.md": "# second\n", "agent.json": MOCK, "tool.sh": "echo tool"}))
    session = create_session(client, name)
    assert session["agentVersion"] == 2
    result = run(client, session["id"], "cat /agent/CLAUDE.md; sh /agent/tool.sh; "
                                        "echo $TOKEN; LC_ALL=C ls /agent")
    assert result["exitCode"] == 0, result
    assert result["stdout"] == "# second\ntool\nsecond\nCLAUDE.md\nagent.json\ntool.sh\n"


# PATCH /api/agents/{name}


def test_patch_merges_config_shallowly_and_replaces_env_as_a_new_version(client, name) -> None:
    deploy_upload(client, name, env={"OLD": "1"}, files=upload({
        "agent.json": json.dumps({"backend": "mock", "mock": {"a": 1}, "keep": 1})}))
    response = client.patch(f"/api/agents/{name}", json={
        "env": {"NEW": "2"}, "config": {"mock": {"b": 2}, "extra": True}})
    assert response.status_code == 200, response.text
    agent = response.json()["agent"]
    assert agent["version"] == 2
    assert agent["env"] == {"NEW": "***"}
    assert agent["config"] == {"backend": "mock", "mock": {"b": 2}, "keep": 1, "extra": True,
                               "env": {"NEW": "***"}}
    stored = json.loads((Path(agent["path"]) / "agent.json").read_text())
    assert stored["env"] == {"NEW": "2"}
    assert agent["updatedAt"] >= agent["createdAt"]


def test_patch_env_value_of_stars_keeps_the_stored_value(client, name) -> None:
    deployed(client, name)
    response = client.patch(f"/api/agents/{name}", json={"env": {"TOKEN": "***", "B": "b"}})
    assert response.status_code == 200, response.text
    stored = json.loads((Path(response.json()["agent"]["path"]) / "agent.json").read_text())
    assert stored["env"] == {"TOKEN": "s3cret", "B": "b"}


BAD_PATCHES: list[tuple[Any, str]] = [
    ({"name": "renamed"}, "unknown"),
    ({"config": [1]}, "config"),
    ({"config": "x"}, "config"),
    ({"config": None}, "config"),
    ({"env": ["A"]}, "env"),
    ({"env": None}, "env"),
    ({"env": {"A": 1}}, "A"),
    ({"config": {"backend": "nope"}}, "backend"),
    ({"config": {"limits": {"pids": "many"}}}, "agent.json"),
    ({"config": {"env": {"A": 1}}}, "A"),
]


@pytest.mark.parametrize(("body", "word"), BAD_PATCHES,
                         ids=[f"{i}-{w}" for i, (_, w) in enumerate(BAD_PATCHES)])
def test_bad_patch_is_a_400_that_changes_nothing(client, name, body, word) -> None:
    before = snapshot(client, name)
    assert_error(client.patch(f"/api/agents/{name}", json=body), 400, word)
    assert_unchanged(client, before)


def test_patch_of_a_non_object_body_is_a_400(client, name) -> None:
    before = snapshot(client, name)
    assert_error(client.patch(f"/api/agents/{name}", json=[1]), 400)
    assert_error(client.patch(f"/api/agents/{name}/config", json="x"), 400)
    assert_unchanged(client, before)


@pytest.mark.parametrize("route", ["", "/config", "/files", "/files/CLAUDE.md"])
def test_routes_of_an_unknown_agent_are_404_and_of_a_bad_name_400(client, route) -> None:
    assert_error(client.get(f"/api/agents/no-such-agent{route}"), 404, "no-such-agent")
    assert_error(client.get(f"/api/agents/..x{route}"), 400, "name")


@pytest.mark.parametrize(("method", "route", "body"), [
    ("PATCH", "", {"env": {}}), ("PATCH", "/config", {"a": 1}),
    ("POST", "/files", {"files": upload({"x": "y"})}), ("DELETE", "/files/x", None)])
def test_changes_of_an_unknown_agent_are_404(client, method, route, body) -> None:
    response = client.request(method, f"/api/agents/no-such-agent{route}", json=body)
    assert_error(response, 404, "no-such-agent")
    assert client.get("/api/agents/no-such-agent").status_code == 404


def test_session_after_a_patch_sees_the_new_env_and_config(client, name) -> None:
    deployed(client, name)
    old = create_session(client, name)
    response = client.patch(f"/api/agents/{name}",
                            json={"env": {"TOKEN": "rotated"}, "config": {"marker": "m1"}})
    assert response.status_code == 200, response.text
    session = create_session(client, name)
    assert (old["agentVersion"], session["agentVersion"]) == (1, 2)
    result = run(client, session["id"], "echo $TOKEN; cat /agent/agent.json")
    assert result["exitCode"] == 0, result
    first, _, config = result["stdout"].partition("\n")
    assert first == "rotated"
    assert json.loads(config)["marker"] == "m1"


# /config


def test_get_config_redacts_env_values(client, name) -> None:
    deployed(client, name)
    response = client.get(f"/api/agents/{name}/config")
    assert response.status_code == 200, response.text
    assert response.json() == {"config": {"backend": "mock", "env": {"TOKEN": "***"}}}


def test_patch_config_merges_any_object_as_a_new_version(client, name) -> None:
    deployed(client, name)
    response = client.patch(f"/api/agents/{name}/config", json={"limits": {"pids": 32}})
    assert response.status_code == 200, response.text
    assert response.json() == {"config": {"backend": "mock", "env": {"TOKEN": "***"},
                                          "limits": {"pids": 32}}}
    agent = get_agent(client, name)
    assert agent["version"] == 2
    stored = json.loads((Path(agent["path"]) / "agent.json").read_text())
    assert stored == {"backend": "mock", "env": {"TOKEN": "s3cret"}, "limits": {"pids": 32}}


def test_config_read_back_and_written_back_keeps_the_secrets(client, name) -> None:
    deployed(client, name)
    config = client.get(f"/api/agents/{name}/config").json()["config"]
    assert client.patch(f"/api/agents/{name}/config", json=config).status_code == 200
    stored = json.loads((Path(get_agent(client, name)["path"]) / "agent.json").read_text())
    assert stored["env"] == {"TOKEN": "s3cret"}


# /files


def test_files_lists_every_file_with_size_and_iso_time(client, name) -> None:
    deploy_upload(client, name, env={"TOKEN": "s3cret"}, files=upload({
        "CLAUDE.md": "# hi\n", "agent.json": MOCK, ".claude/settings.json": "{}"}))
    response = client.get(f"/api/agents/{name}/files")
    assert response.status_code == 200, response.text
    files = {f["path"]: f for f in response.json()["files"]}
    assert files.keys() == {"CLAUDE.md", "agent.json", ".claude/settings.json"}
    assert files["CLAUDE.md"]["size"] == 5
    assert files["CLAUDE.md"]["modifiedAt"].endswith("Z")
    shown = client.get(f"/api/agents/{name}/files/agent.json").json()
    assert files["agent.json"]["size"] == shown["size"] == len(shown["content"])


def test_file_reads_as_json_by_default_and_raw_as_an_attachment(client, name) -> None:
    deployed(client, name)
    response = client.get(f"/api/agents/{name}/files/sub/notes.txt")
    assert response.status_code == 200, response.text
    assert response.json() == {"path": "sub/notes.txt", "content": "notes\n", "size": 6}
    raw = client.get(f"/api/agents/{name}/files/sub/notes.txt", params={"format": "raw"})
    assert raw.status_code == 200
    assert raw.content == b"notes\n"
    assert raw.headers["content-disposition"] == "attachment; filename*=UTF-8''notes.txt"


def test_binary_file_reads_as_base64_in_json(client, name) -> None:
    deploy_upload(client, name, files=upload({"blob.bin": b"\xff\x00\xfe"}))
    body = client.get(f"/api/agents/{name}/files/blob.bin").json()
    assert body == {"path": "blob.bin", "content": b64(b"\xff\x00\xfe"), "size": 3,
                    "encoding": "base64"}


def test_agent_json_through_the_files_route_has_env_values_redacted(client, name) -> None:
    deployed(client, name)
    shown = client.get(f"/api/agents/{name}/files/agent.json")
    raw = client.get(f"/api/agents/{name}/files/agent.json", params={"format": "raw"})
    assert raw.headers["content-type"] == "application/octet-stream"
    for text in (shown.json()["content"], raw.text):
        assert "s3cret" not in text
        assert json.loads(text)["env"] == {"TOKEN": "***"}


def test_json_read_past_1_mib_is_a_413_and_raw_streams_it(client, name) -> None:
    deploy_upload(client, name, files=upload({"big.bin": bytes(2 * MIB)}))
    assert_error(client.get(f"/api/agents/{name}/files/big.bin"), 413)
    raw = client.get(f"/api/agents/{name}/files/big.bin", params={"format": "raw"})
    assert raw.status_code == 200
    assert raw.content == bytes(2 * MIB)


@pytest.mark.parametrize(("path", "status"), [
    ("missing.txt", 404), ("sub", 404), ("%2E%2E/%2E%2E/etc/passwd", 400), ("/etc/passwd", 400)])
def test_bad_file_reads_are_4xx(client, name, path, status) -> None:
    deployed(client, name)
    assert_error(client.get(f"/api/agents/{name}/files/{path}"), status)


def test_unknown_read_format_is_a_400(client, name) -> None:
    deployed(client, name)
    assert_error(client.get(f"/api/agents/{name}/files/CLAUDE.md", params={"format": "x"}),
                 400, "format")


def test_write_files_reports_the_count_and_bumps_the_version(client, name) -> None:
    before = deployed(client, name)
    response = client.post(f"/api/agents/{name}/files",
                           json={"files": upload({"CLAUDE.md": "new", "skills/a.md": "a"})})
    assert response.status_code == 200, response.text
    assert response.json() == {"written": 2}
    agent = get_agent(client, name)
    assert agent["version"] == before["version"] + 1
    files = tree(Path(agent["path"]))
    assert files.keys() == {"CLAUDE.md", "agent.json", "skills/a.md", "sub/notes.txt"}
    assert (files["CLAUDE.md"], files["skills/a.md"]) == (b"new", b"a")
    no_staging_left(agent["path"])


BAD_WRITES: list[tuple[Any, int, str]] = [
    ({"files": upload({"agent.json": "{}"})}, 400, "config"),
    ({"files": upload({"../x": "y"})}, 400, ".."),
    ({"files": upload({"/x": "y"})}, 400, "relative"),
    ({"files": upload({"sub/notes.txt/x": "y"})}, 400, "sub/notes.txt"),
    ({"files": upload({"sub": "a folder"})}, 400, "sub"),
    ({"files": [{"path": "x", "content": "@@"}]}, 400, "base64"),
    ({"files": [{"path": "x", "content": b64("1")}, {"path": "x", "content": b64("2")}]},
     400, "second time"),
    ({"files": []}, 400, "files"),
    ({}, 400, "files"),
]


@pytest.mark.parametrize(("body", "status", "word"), BAD_WRITES,
                         ids=[f"{i}-{w}" for i, (_, _, w) in enumerate(BAD_WRITES)])
def test_bad_file_write_is_a_4xx_that_changes_nothing(client, name, body, status, word) -> None:
    before = snapshot(client, name)
    assert_error(client.post(f"/api/agents/{name}/files", json=body), status, word)
    assert_unchanged(client, before)
    no_staging_left(before["path"])


def test_delete_file_removes_it_as_a_new_version(client, name) -> None:
    deployed(client, name)
    response = client.delete(f"/api/agents/{name}/files/sub/notes.txt")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": True}
    agent = get_agent(client, name)
    assert agent["version"] == 2
    assert "sub/notes.txt" not in tree(Path(agent["path"]))


@pytest.mark.parametrize(("path", "status", "word"), [
    ("missing.txt", 404, "missing"), ("sub", 404, "directory"), ("CLAUDE.md", 400, "CLAUDE.md"),
    ("agent.json", 400, "config"), ("%2E%2E/x", 400, ".."), ("/etc/hosts", 400, "relative")])
def test_bad_file_delete_is_a_4xx_that_changes_nothing(client, name, path, status, word) -> None:
    before = snapshot(client, name)
    assert_error(client.delete(f"/api/agents/{name}/files/{path}"), status, word)
    assert_unchanged(client, before)


def test_session_after_a_file_write_sees_the_new_file(client, name) -> None:
    deployed(client, name)
    response = client.post(f"/api/agents/{name}/files", json={"files": upload({"new.txt": "hi"})})
    assert response.status_code == 200, response.text
    session = create_session(client, name)
    assert session["agentVersion"] == 2
    result = run(client, session["id"], "cat /agent/new.txt")
    assert result["stdout"] == "hi", result


# links in an agent's folder


@pytest.fixture
def linked(client, name, tmp_path) -> dict[str, Any]:
    """An agent deployed by path whose folder holds a link to a host file and one to a
    host folder (a deploy copies links as links)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host only")
    folder = make_agent_folder(tmp_path, name)
    (folder / "file-link").symlink_to(outside / "secret")
    (folder / "dir-link").symlink_to(outside)
    agent = deploy(client, name, folder)
    return {**agent, "outside": outside}


def test_files_list_no_link_nor_what_it_points_at(client, linked) -> None:
    files = client.get(f"/api/agents/{linked['name']}/files").json()["files"]
    assert sorted(f["path"] for f in files) == ["CLAUDE.md", "agent.json"]


@pytest.mark.parametrize("path", ["file-link", "dir-link/secret"])
def test_file_read_through_a_link_is_a_400(client, linked, path) -> None:
    response = client.get(f"/api/agents/{linked['name']}/files/{path}")
    assert_error(response, 400, "link")
    assert "host only" not in response.text


@pytest.mark.parametrize("path", ["file-link", "dir-link/secret", "dir-link/new"])
def test_file_write_through_a_link_is_a_400_that_changes_nothing(client, linked, path) -> None:
    response = client.post(f"/api/agents/{linked['name']}/files",
                           json={"files": upload({path: "overwritten"})})
    assert_error(response, 400, "link")
    assert sorted(os.listdir(linked["outside"])) == ["secret"]
    assert (linked["outside"] / "secret").read_text() == "host only"
    assert get_agent(client, linked["name"])["version"] == 1


def test_file_delete_through_a_link_is_a_400_and_of_a_link_removes_only_it(
        client, linked) -> None:
    name = linked["name"]
    assert_error(client.delete(f"/api/agents/{name}/files/dir-link/secret"), 400, "link")
    assert client.delete(f"/api/agents/{name}/files/file-link").status_code == 200
    assert (linked["outside"] / "secret").read_text() == "host only"
    assert not os.path.lexists(Path(linked["path"]) / "file-link")


# live sessions


def test_a_live_session_keeps_its_agent_folder_across_a_change(client, name) -> None:
    """A running sandbox has the folder bound at /agent: a change keeps that folder aside
    (retired) while the agent has live sessions, and the next change made without any
    removes it."""
    agent = deployed(client, name)
    live = create_session(client, name)
    response = client.post(f"/api/agents/{name}/files",
                           json={"files": upload({"CLAUDE.md": "# changed\n"})})
    assert response.status_code == 200, response.text
    assert run(client, live["id"], "cat /agent/CLAUDE.md")["stdout"] == "# uploaded\n"
    fresh = create_session(client, name)
    assert run(client, fresh["id"], "cat /agent/CLAUDE.md")["stdout"] == "# changed\n"
    assert len(leftovers(agent["path"])) == 1
    for session in (live, fresh):
        assert client.delete(f"/api/sessions/{session['id']}").status_code == 200
    assert client.patch(f"/api/agents/{name}/config", json={"a": 1}).status_code == 200
    no_staging_left(agent["path"])


def test_a_runner_serves_an_uploaded_agent_and_its_changes(tmp_path) -> None:
    """Split mode: the runner gets the uploaded folder (readable by the sandbox's user),
    and after a files write and a PATCH the next session gets the new version."""
    with Cluster(tmp_path).start() as cluster:
        cluster.add_runners("r1")
        with cluster.client() as c:
            deployed(c, "remote")
            first = create_session(c, "remote")
            assert run(c, first["id"], "cat /agent/sub/notes.txt; echo $TOKEN")["stdout"] == \
                "notes\ns3cret\n"
            assert c.post("/api/agents/remote/files",
                          json={"files": upload({"sub/notes.txt": "v2"})}).status_code == 200
            assert c.patch("/api/agents/remote", json={"env": {"TOKEN": "v3"}}).status_code \
                == 200
            later = create_session(c, "remote")
            assert later["agentVersion"] == 3
            assert run(c, later["id"], "cat /agent/sub/notes.txt; echo; echo $TOKEN")[
                "stdout"] == "v2\nv3\n"


def test_concurrent_file_writes_all_land(gateway, client, name) -> None:
    """Each change builds on the folder the previous one left (one change at a time);
    the writes come from clients of their own, on connections of their own."""
    deployed(client, name)

    def write(path: str) -> int:
        with make_client(gateway) as own:
            body = {"files": upload({path: path})}
            return own.post(f"/api/agents/{name}/files", json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(write, [f"f{i}.txt" for i in range(8)]))
    assert statuses == [200] * 8
    agent = get_agent(client, name)
    assert agent["version"] == 9
    assert {f"f{i}.txt" for i in range(8)} <= tree(Path(agent["path"])).keys()
