"""The session files API (`/files`, `/workspace`) on a real gateway with bwrap sandboxes.

The sandbox is the attacker: it makes links in its workspace, and the host touches that
workspace as root. Every escape attempt must be a 400 that changes nothing: a canary
file outside the workspace (and the host's /etc) stays as it was.
"""

from __future__ import annotations

import base64
import io
import subprocess
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest

from runner.workspace_files import (
    TooLarge,
    UnsafePath,
    check_bundle,
    delete_file,
    open_file,
    write_file,
)
from tests.conftest import make_client
from tests.gateway_process import kill_bridge
from tests.sandbox_helpers import module_gateway, new_session, run, running_gateway

gateway, client = module_gateway("files")

SANDBOX_UID = 100000
"""The host uid sandboxes run as (runner.isolation HostIds default)."""


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("canary") / "canary.txt"
    path.write_text("untouched")
    return path


@pytest.fixture
def sid(client: httpx.Client, tmp_path: Path) -> str:
    return new_session(client, tmp_path, f"files-{uuid.uuid4().hex[:8]}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(client: httpx.Client, sid: str, files: dict[str, bytes], **extra: object
          ) -> httpx.Response:
    return client.post(f"/api/sessions/{sid}/files", json={
        "files": [{"path": path, "content": b64(data)} for path, data in files.items()],
        **extra})


def tar_gz(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A tar.gz of (name, file content or None, link target or None) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["statusCode"] == 400
    assert response.json()["error"]


# the happy paths


def test_written_files_are_seen_by_the_agent(client: httpx.Client, sid: str) -> None:
    response = write(client, sid, {"a.txt": b"alpha", "deep/er/b.txt": b"beta"})
    assert response.status_code == 200, response.text
    assert response.json()["files"] == [
        {"path": "a.txt", "written": True, "size": 5},
        {"path": "deep/er/b.txt", "written": True, "size": 4}]
    shown = run(client, sid, "cat a.txt deep/er/b.txt; stat -c %u a.txt deep deep/er/b.txt")
    assert shown["stdout"] == "alphabeta1000\n1000\n1000\n"  # 1000: the agent's own uid


def test_a_written_file_is_owned_by_the_sandbox_uid_on_the_host(
        client: httpx.Client, sid: str, gateway) -> None:
    """Seen in the gateway's mount namespace, where the workspace disk is mounted."""
    write(client, sid, {"target/x.txt": b"x"}, targetPath="sub")
    workspace = gateway.data_dir / "sandboxes" / sid / "workspace"
    owners = subprocess.run(
        ["nsenter", "-t", str(gateway.process.pid), "-m", "stat", "-c", "%u:%g",
         *(str(workspace / path) for path in ("sub", "sub/target", "sub/target/x.txt"))],
        capture_output=True, text=True, check=True).stdout.split()
    assert owners == [f"{SANDBOX_UID}:{SANDBOX_UID}"] * 3
    assert run(client, sid, "echo more >> sub/target/x.txt")["exitCode"] == 0


def test_files_the_agent_writes_are_listed_and_read(client: httpx.Client, sid: str) -> None:
    run(client, sid, "mkdir -p out && printf report > out/r.md && printf h > .hidden")
    listed = client.get(f"/api/sessions/{sid}/files")
    assert listed.status_code == 200
    assert listed.json()["source"] == "sandbox"
    paths = {f["path"]: f for f in listed.json()["files"]}
    assert paths["out/r.md"]["size"] == 6
    assert paths["out/r.md"]["modifiedAt"].endswith("Z")
    assert ".hidden" not in paths
    hidden = client.get(f"/api/sessions/{sid}/files", params={"includeHidden": "true"})
    assert ".hidden" in {f["path"] for f in hidden.json()["files"]}
    as_json = client.get(f"/api/sessions/{sid}/files/out/r.md", params={"format": "json"})
    assert as_json.json() == {"path": "out/r.md", "content": "report", "size": 6,
                              "source": "sandbox"}
    raw = client.get(f"/api/sessions/{sid}/files/out/r.md")
    assert raw.content == b"report"
    assert raw.headers["x-ash-source"] == "sandbox"
    assert "attachment" in raw.headers["content-disposition"]


def test_a_big_file_streams_raw_whole(client: httpx.Client, sid: str) -> None:
    run(client, sid, "head -c 3000000 /dev/urandom > big.bin")
    raw = client.get(f"/api/sessions/{sid}/files/big.bin")
    assert raw.status_code == 200
    assert len(raw.content) == 3_000_000
    assert client.get(f"/api/sessions/{sid}/files/big.bin",
                      params={"format": "json"}).status_code == 413


def test_delete_removes_the_file(client: httpx.Client, sid: str) -> None:
    write(client, sid, {"gone.txt": b"bye"})
    response = client.delete(f"/api/sessions/{sid}/files/gone.txt")
    assert response.json() == {"path": "gone.txt", "deleted": True}
    assert run(client, sid, "test -e gone.txt")["exitCode"] == 1
    assert client.delete(f"/api/sessions/{sid}/files/gone.txt").status_code == 404


def test_files_are_read_from_disk_after_the_sandbox_is_paused(
        client: httpx.Client, sid: str) -> None:
    run(client, sid, "printf kept > kept.txt")
    assert client.post(f"/api/sessions/{sid}/pause").status_code == 200
    kill_bridge(sid)
    listed = client.get(f"/api/sessions/{sid}/files")
    assert listed.status_code == 200, listed.text
    assert listed.json()["source"] == "snapshot"
    assert "kept.txt" in {f["path"] for f in listed.json()["files"]}
    assert client.get(f"/api/sessions/{sid}/files/kept.txt").content == b"kept"


def test_files_of_a_stopped_gateway_are_served_from_the_unmounted_disk(tmp_path: Path) -> None:
    """A gateway's exit stops every sandbox and unmounts its disk (the mount lived in its
    mount namespace): the next gateway mounts the workspace image for each request, reads
    and writes it, and a resume sees the write."""
    data = tmp_path / "data"
    with running_gateway(data) as first, make_client(first) as c:
        session = new_session(c, tmp_path, "restart")
        run(c, session, "printf before > before.txt")
    with running_gateway(data) as second, make_client(second) as c:
        assert c.get(f"/api/sessions/{session}/files/before.txt").content == b"before"
        assert write(c, session, {"after.txt": b"after"}).status_code == 200
        assert c.post(f"/api/sessions/{session}/resume").status_code == 200
        assert run(c, session, "cat after.txt")["stdout"] == "after"


def test_download_is_a_tar_gz_of_the_workspace(client: httpx.Client, sid: str) -> None:
    write(client, sid, {"d/one.txt": b"1"})
    response = client.get(f"/api/sessions/{sid}/workspace")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert f'filename="{sid}.tar.gz"' in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        member = tar.extractfile("d/one.txt")
        assert member is not None and member.read() == b"1"


def test_upload_restores_files_into_the_workspace(client: httpx.Client, sid: str) -> None:
    bundle = tar_gz([("up/new.txt", b"from bundle", None), ("up/link", None, "new.txt")])
    response = client.post(f"/api/sessions/{sid}/workspace", json={"bundle": b64(bundle)})
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Workspace restored to live sandbox"}
    shown = run(client, sid, "cat up/new.txt; echo; cat up/link; stat -c %u up/new.txt")
    assert shown["stdout"].split("\n") == ["from bundle", "from bundle1000", ""]


# unknown, ended, bad input


def test_unknown_session_is_404(client: httpx.Client) -> None:
    assert client.get("/api/sessions/no-such/files").status_code == 404
    assert client.get("/api/sessions/no-such/workspace").status_code == 404


def test_ended_session_is_410(client: httpx.Client, sid: str) -> None:
    client.delete(f"/api/sessions/{sid}")
    assert client.get(f"/api/sessions/{sid}/files").status_code == 410
    assert write(client, sid, {"a": b"a"}).status_code == 410


@pytest.mark.parametrize("body", [
    {}, {"files": []}, {"files": "x"}, {"files": [{"path": "a"}]},
    {"files": [{"path": "a", "content": "not base64!"}]},
    {"files": [{"path": 3, "content": ""}]}, {"files": [1]},
    {"files": [{"path": "a", "content": ""}], "targetPath": 5},
])
def test_bad_write_bodies_are_400(client: httpx.Client, sid: str, body: dict) -> None:
    assert_refused(client.post(f"/api/sessions/{sid}/files", json=body))


def test_bad_query_values_are_400(client: httpx.Client, sid: str) -> None:
    write(client, sid, {"q.txt": b"q"})
    assert_refused(client.get(f"/api/sessions/{sid}/files/q.txt", params={"format": "xml"}))
    assert_refused(client.get(f"/api/sessions/{sid}/files", params={"includeHidden": "yes"}))


def test_a_bad_bundle_is_400(client: httpx.Client, sid: str) -> None:
    assert_refused(client.post(f"/api/sessions/{sid}/workspace", json={"bundle": b64(b"junk")}))
    assert_refused(client.post(f"/api/sessions/{sid}/workspace", json={}))


# escapes


ESCAPING_PATHS = ["../x", "/etc/passwd", "a/../../x", "a/\x00b", "..", "sub/../../../etc/x"]


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_a_write_outside_the_workspace_is_400_and_writes_nothing(
        client: httpx.Client, sid: str, path: str, gateway) -> None:
    response = write(client, sid, {"fine.txt": b"f", path: b"evil"})
    assert_refused(response)
    assert run(client, sid, "test -e fine.txt")["exitCode"] == 1  # the batch changed nothing
    assert not (gateway.data_dir / "sandboxes" / "x").exists()


@pytest.mark.parametrize("target", ["..", "../..", "/etc", "/"])
def test_a_target_path_outside_the_workspace_is_400(
        client: httpx.Client, sid: str, target: str) -> None:
    assert_refused(write(client, sid, {"x": b"x"}, targetPath=target))


@pytest.mark.parametrize("path", ["..%2Fx", "%2E%2E/x", "a/%2e%2e/%2e%2e/x", "%2Fetc%2Fpasswd",
                                  "a%00b"])
def test_an_encoded_escape_in_the_url_is_400(client: httpx.Client, sid: str, path: str) -> None:
    assert_refused(client.get(f"/api/sessions/{sid}/files/{path}"))
    assert_refused(client.delete(f"/api/sessions/{sid}/files/{path}"))


def test_reading_through_an_agent_link_to_etc_is_400(client: httpx.Client, sid: str) -> None:
    run(client, sid, "ln -s /etc link && ln -s /etc/hostname name")
    assert_refused(client.get(f"/api/sessions/{sid}/files/link/shadow"))
    assert_refused(client.get(f"/api/sessions/{sid}/files/link/passwd",
                              params={"format": "json"}))
    assert_refused(client.get(f"/api/sessions/{sid}/files/name"))


def test_writing_through_an_agent_link_is_400_and_the_target_is_untouched(
        client: httpx.Client, sid: str, canary: Path) -> None:
    run(client, sid, f"ln -s {canary.parent} out && ln -s {canary} file")
    assert_refused(write(client, sid, {"out/canary.txt": b"pwned"}))
    assert_refused(write(client, sid, {"out/new.txt": b"pwned"}))
    assert_refused(write(client, sid, {"file": b"pwned"}))
    assert canary.read_text() == "untouched"
    assert not (canary.parent / "new.txt").exists()


def test_deleting_through_an_agent_link_is_400_and_deletes_nothing(
        client: httpx.Client, sid: str, canary: Path) -> None:
    run(client, sid, f"ln -s {canary.parent} out")
    assert_refused(client.delete(f"/api/sessions/{sid}/files/out/canary.txt"))
    assert canary.read_text() == "untouched"


def test_deleting_a_link_removes_the_link_not_its_target(
        client: httpx.Client, sid: str, canary: Path) -> None:
    run(client, sid, f"ln -s {canary} file")
    assert client.delete(f"/api/sessions/{sid}/files/file").status_code == 200
    assert canary.read_text() == "untouched"


def test_listing_does_not_follow_an_agent_link(client: httpx.Client, sid: str) -> None:
    run(client, sid, "ln -s /etc etc")
    paths = {f["path"] for f in client.get(f"/api/sessions/{sid}/files").json()["files"]}
    assert not any(path.startswith("etc/") for path in paths)


@pytest.mark.parametrize("members", [
    [("../x", b"evil", None)],
    [("/abs.txt", b"evil", None)],
    [("a/../../x", b"evil", None)],
    [("out", None, "/tmp"), ("out/x", b"evil", None)],
    [("out", None, "../.."), ("fine.txt", b"f", None)],
    [("up", None, "sub"), ("up/x", b"evil", None)],
    [("later/x", b"evil", None), ("later", None, "/etc")],
    [("same", b"file", None), ("same", None, "fine.txt")],
])
def test_an_escaping_bundle_is_400_and_changes_nothing(
        client: httpx.Client, sid: str, members: list, gateway) -> None:
    bundle = tar_gz([("fine.txt", b"f", None), *[m for m in members if m[0] != "fine.txt"]])
    response = client.post(f"/api/sessions/{sid}/workspace", json={"bundle": b64(bundle)})
    assert_refused(response)
    assert run(client, sid, "test -e fine.txt")["exitCode"] == 1
    assert not (gateway.data_dir / "sandboxes" / "x").exists()


def test_a_bundle_through_an_agent_link_is_400_and_the_target_is_untouched(
        client: httpx.Client, sid: str, canary: Path) -> None:
    run(client, sid, f"ln -s {canary.parent} out")
    bundle = tar_gz([("out/canary.txt", b"pwned", None)])
    assert_refused(client.post(f"/api/sessions/{sid}/workspace", json={"bundle": b64(bundle)}))
    assert canary.read_text() == "untouched"


# bounds


def test_a_write_body_past_its_limit_is_413(tmp_path: Path) -> None:
    env = {"ASH_FILES_MAX_BODY_BYTES": "2000", "ASH_WORKSPACE_MAX_BODY_BYTES": "2000"}
    with running_gateway(tmp_path / "data", extra_env=env) as small, make_client(small) as c:
        session = new_session(c, tmp_path, "small")
        big = write(c, session, {"big.bin": bytes(3000)})
        assert big.status_code == 413, big.text
        assert big.json()["statusCode"] == 413
        assert write(c, session, {"fits.bin": bytes(1000)}).status_code == 200
        upload = c.post(f"/api/sessions/{session}/workspace",
                        json={"bundle": b64(bytes(3000))})
        assert upload.status_code == 413


def test_a_write_body_over_the_general_1_mib_limit_is_accepted(
        client: httpx.Client, sid: str) -> None:
    response = write(client, sid, {"two-mib.bin": bytes(2 * 1024 * 1024)})
    assert response.status_code == 200, response.text
    assert run(client, sid, "stat -c %s two-mib.bin")["stdout"] == "2097152\n"


def test_a_bundle_that_unpacks_past_its_bound_is_refused_whole() -> None:
    bundle = tar_gz([("a.bin", bytes(600), None), ("b.bin", bytes(600), None)])
    with pytest.raises(TooLarge):
        check_bundle(bundle, max_unpacked=1000)
    with pytest.raises(TooLarge):
        check_bundle(bundle, max_members=1)


# the write itself, past the look before it (a link swapped in after the check)


def test_write_file_refuses_a_link_on_the_way_even_without_the_check(tmp_path: Path) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "canary").write_text("untouched")
    (root / "dir").symlink_to(outside)
    (root / "file").symlink_to(outside / "canary")
    with pytest.raises(UnsafePath):
        write_file(root, "dir/new", b"pwned", None)
    with pytest.raises(UnsafePath):
        write_file(root, "file", b"pwned", None)
    with pytest.raises(UnsafePath):
        open_file(root, "dir/canary", 100)
    with pytest.raises(UnsafePath):
        delete_file(root, "dir/canary")
    assert (outside / "canary").read_text() == "untouched"
    assert sorted(p.name for p in outside.iterdir()) == ["canary"]
