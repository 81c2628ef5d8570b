"""The session files API in split mode: a coordinator gateway and real runner processes.

While the sandbox is live, every operation goes to its runner over gRPC and sees (and
changes) the live workspace: `source` is "sandbox". With no live sandbox (stopped, or its
runner lost), writes, deletes and uploads edit the stored state, which the next resume
restores. The sandbox is the attacker: escapes (`..`, absolute paths, links it made
pointing out, archive members leaving) are 400 and change nothing, on either path.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.sandbox_helpers import run
from tests.split_cluster import Cluster
from tests.test_session_files import tar_gz

AGENT = "files"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("split-files")
    with Cluster(root).start() as running:
        running.add_runners("r1")
        with running.client() as c:
            deploy(c, AGENT, make_agent_folder(root, AGENT))
        yield running


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.client() as c:
        yield c


@pytest.fixture
def sid(client: httpx.Client) -> str:
    return str(create_session(client, AGENT)["id"])


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A host directory outside every workspace, holding one file that must not change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "canary.txt").write_text("untouched")
    os.chmod(tmp_path, 0o755)
    return folder


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(client: httpx.Client, sid: str, files: dict[str, bytes]) -> httpx.Response:
    return client.post(f"/api/sessions/{sid}/files", json={
        "files": [{"path": path, "content": b64(data)} for path, data in files.items()]})


def written(client: httpx.Client, sid: str, files: dict[str, bytes]) -> None:
    response = write(client, sid, files)
    assert response.status_code == 200, response.text
    assert all(entry["written"] for entry in response.json()["files"]), response.text


def read(client: httpx.Client, sid: str, path: str) -> httpx.Response:
    return client.get(f"/api/sessions/{sid}/files/{path}")


def listing(client: httpx.Client, sid: str) -> dict:
    response = client.get(f"/api/sessions/{sid}/files", params={"includeHidden": "true"})
    assert response.status_code == 200, response.text
    return response.json()


def upload(client: httpx.Client, sid: str, archive: bytes) -> httpx.Response:
    return client.post(f"/api/sessions/{sid}/workspace", json={"bundle": b64(archive)})


def cat(client: httpx.Client, sid: str, path: str) -> str:
    return str(run(client, sid, f"cat {path} 2>&1 || echo MISSING")["stdout"])


def post_ok(client: httpx.Client, path: str) -> dict:
    response = client.post(path)
    assert response.status_code == 200, response.text
    return response.json()["session"]


def stop(client: httpx.Client, sid: str) -> None:
    assert post_ok(client, f"/api/sessions/{sid}/stop")["status"] == "stopped"


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["statusCode"] == 400


# live sandbox: the runner's workspace over gRPC


def test_a_live_write_reads_back_from_the_sandbox(client: httpx.Client, sid: str) -> None:
    written(client, sid, {"notes/hello.txt": b"hello split"})
    raw = read(client, sid, "notes/hello.txt")
    assert raw.status_code == 200 and raw.content == b"hello split"
    assert raw.headers["x-ash-source"] == "sandbox"
    as_json = client.get(f"/api/sessions/{sid}/files/notes/hello.txt",
                         params={"format": "json"}).json()
    assert as_json == {"path": "notes/hello.txt", "size": 11, "source": "sandbox",
                       "content": "hello split"}
    listed = listing(client, sid)
    assert listed["source"] == "sandbox"
    assert {"path": "notes/hello.txt", "size": 11} in [
        {"path": f["path"], "size": f["size"]} for f in listed["files"]]


def test_reads_show_the_live_workspace_not_the_stored_state(
        client: httpx.Client, sid: str) -> None:
    send_message(client, sid, "ship a state")  # the stored state now exists, without x.txt
    run(client, sid, "printf live > x.txt")
    assert read(client, sid, "x.txt").content == b"live"
    assert "x.txt" in {f["path"] for f in listing(client, sid)["files"]}


def test_a_live_write_is_seen_by_exec_and_by_a_turn(client: httpx.Client, sid: str) -> None:
    written(client, sid, {"seen.txt": b"visible-to-the-agent"})
    assert cat(client, sid, "seen.txt") == "visible-to-the-agent"
    turn = send_message(client, sid, "/bash cat seen.txt")
    assert "visible-to-the-agent" in str([event.data for event in turn])


def test_a_big_file_crosses_in_chunks_both_ways(client: httpx.Client, sid: str) -> None:
    data = os.urandom(6 * 1024 * 1024)  # past gRPC's default 4 MiB message
    written(client, sid, {"big.bin": data})
    assert run(client, sid, "stat -c %s big.bin")["stdout"] == f"{len(data)}\n"
    raw = read(client, sid, "big.bin")
    assert raw.status_code == 200
    assert raw.content == data


def test_a_live_delete_removes_the_file(client: httpx.Client, sid: str) -> None:
    written(client, sid, {"gone.txt": b"x"})
    deleted = client.delete(f"/api/sessions/{sid}/files/gone.txt")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"path": "gone.txt", "deleted": True}
    assert cat(client, sid, "gone.txt").endswith("MISSING\n")
    assert client.delete(f"/api/sessions/{sid}/files/gone.txt").status_code == 404
    assert read(client, sid, "gone.txt").status_code == 404


def test_a_live_upload_then_download_round_trips(client: httpx.Client, sid: str) -> None:
    archive = tar_gz([("up/a.txt", b"alpha", None), ("up/b.bin", bytes(range(256)), None)])
    response = upload(client, sid, archive)
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Workspace restored to live sandbox"}
    assert cat(client, sid, "up/a.txt") == "alpha"
    download = client.get(f"/api/sessions/{sid}/workspace")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        member = tar.extractfile("up/b.bin")
        assert member is not None and member.read() == bytes(range(256))


def test_a_json_read_past_1_mib_is_413(client: httpx.Client, sid: str) -> None:
    run(client, sid, "head -c 1100000 /dev/zero > large.bin")
    response = client.get(f"/api/sessions/{sid}/files/large.bin", params={"format": "json"})
    assert response.status_code == 413, response.text
    assert response.json()["statusCode"] == 413


def test_live_path_escapes_are_refused_and_change_nothing(
        client: httpx.Client, sid: str, canary: Path) -> None:
    run(client, sid, f"ln -s {canary} out && ln -s {canary}/canary.txt file-out")
    assert_refused(write(client, sid, {"../escape.txt": b"x"}))
    assert_refused(write(client, sid, {"/tmp/escape.txt": b"x"}))
    assert_refused(write(client, sid, {"out/pwned.txt": b"x"}))
    assert_refused(write(client, sid, {"file-out": b"pwned"}))
    assert_refused(write(client, sid, {"fine.txt": b"x", "out/pwned.txt": b"x"}))
    assert_refused(read(client, sid, "out/canary.txt"))
    assert_refused(read(client, sid, "file-out"))
    assert_refused(read(client, sid, "..%2F..%2Fetc%2Fpasswd"))
    assert_refused(client.delete(f"/api/sessions/{sid}/files/out/canary.txt"))
    assert_refused(upload(client, sid, tar_gz([("out/pwned.txt", b"x", None)])))
    assert_refused(upload(client, sid, tar_gz([("../pwned.txt", b"x", None)])))
    assert_refused(upload(client, sid, tar_gz([("/pwned.txt", b"x", None)])))
    assert_refused(upload(client, sid, tar_gz([("ok.txt", b"x", None),
                                               ("evil", None, "/etc")])))
    assert cat(client, sid, "fine.txt").endswith("MISSING\n")
    assert cat(client, sid, "ok.txt").endswith("MISSING\n")
    assert sorted(p.name for p in canary.iterdir()) == ["canary.txt"]
    assert (canary / "canary.txt").read_text() == "untouched"


def test_a_write_while_paused_is_there_after_resume(client: httpx.Client, sid: str) -> None:
    assert post_ok(client, f"/api/sessions/{sid}/pause")["status"] == "paused"
    written(client, sid, {"paused.txt": b"written while paused"})
    post_ok(client, f"/api/sessions/{sid}/resume")
    assert cat(client, sid, "paused.txt") == "written while paused"


# no live sandbox: the stored state is edited, the next resume restores it


def test_writes_to_a_stopped_session_edit_its_stored_state(
        client: httpx.Client, sid: str) -> None:
    run(client, sid, "printf old > kept.txt && printf bye > doomed.txt")
    stop(client, sid)
    written(client, sid, {"new/stored.txt": b"written while stopped", "kept.txt": b"new"})
    deleted = client.delete(f"/api/sessions/{sid}/files/doomed.txt")
    assert deleted.status_code == 200, deleted.text
    listed = listing(client, sid)
    assert listed["source"] == "snapshot"
    names = {f["path"] for f in listed["files"]}
    assert {"new/stored.txt", "kept.txt"} <= names and "doomed.txt" not in names
    assert read(client, sid, "new/stored.txt").headers["x-ash-source"] == "snapshot"

    post_ok(client, f"/api/sessions/{sid}/resume")
    assert cat(client, sid, "new/stored.txt") == "written while stopped"
    assert cat(client, sid, "kept.txt") == "new"
    assert cat(client, sid, "doomed.txt").endswith("MISSING\n")


def test_concurrent_writes_to_a_stopped_session_all_land(
        client: httpx.Client, sid: str) -> None:
    stop(client, sid)
    names = [f"parallel/{index}.txt" for index in range(6)]
    with ThreadPoolExecutor(len(names)) as pool:
        responses = list(pool.map(lambda name: write(client, sid, {name: name.encode()}),
                                  names))
    assert [r.status_code for r in responses] == [200] * len(names), \
        [r.text for r in responses]
    assert set(names) <= {f["path"] for f in listing(client, sid)["files"]}


def test_an_upload_to_a_stopped_session_is_restored_on_resume(
        client: httpx.Client, sid: str) -> None:
    stop(client, sid)
    response = upload(client, sid, tar_gz([("bundle/a.txt", b"from the bundle", None)]))
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Workspace saved as snapshot"}
    download = client.get(f"/api/sessions/{sid}/workspace")
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        assert "bundle/a.txt" in tar.getnames()
    post_ok(client, f"/api/sessions/{sid}/resume")
    assert cat(client, sid, "bundle/a.txt") == "from the bundle"


def test_stored_state_escapes_are_refused_and_change_nothing(
        client: httpx.Client, sid: str, canary: Path) -> None:
    run(client, sid, f"ln -s {canary} out && printf same > same.txt")
    stop(client, sid)
    before = client.get(f"/api/sessions/{sid}/workspace").content
    assert_refused(write(client, sid, {"out/pwned.txt": b"x"}))
    assert_refused(write(client, sid, {"fine.txt": b"x", "out/pwned.txt": b"x"}))
    assert_refused(write(client, sid, {"../escape.txt": b"x"}))
    assert_refused(client.delete(f"/api/sessions/{sid}/files/out/canary.txt"))
    assert_refused(upload(client, sid, tar_gz([("out/pwned.txt", b"x", None)])))
    assert_refused(upload(client, sid, tar_gz([("../pwned.txt", b"x", None)])))
    assert_refused(upload(client, sid, tar_gz([("/pwned.txt", b"x", None)])))
    assert_refused(upload(client, sid, tar_gz([("ok.txt", b"x", None),
                                               ("evil", None, "/etc")])))
    assert client.delete(f"/api/sessions/{sid}/files/missing.txt").status_code == 404
    assert client.get(f"/api/sessions/{sid}/workspace").content == before
    assert sorted(p.name for p in canary.iterdir()) == ["canary.txt"]
    post_ok(client, f"/api/sessions/{sid}/resume")
    assert cat(client, sid, "fine.txt").endswith("MISSING\n")
    assert cat(client, sid, "same.txt") == "same"


def test_an_edit_past_the_stored_state_limit_is_413_and_changes_nothing(
        tmp_path: Path) -> None:
    with Cluster(tmp_path, gateway_args=["--state-max-bytes", "200000"]).start() as small, \
            small.client() as c:
        deploy(c, AGENT, make_agent_folder(tmp_path, AGENT))
        small.add_runners("r1")
        session = str(create_session(c, AGENT)["id"])
        stop(c, session)
        before = c.get(f"/api/sessions/{session}/workspace").content
        too_big = write(c, session, {"noise.bin": os.urandom(300_000)})
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["statusCode"] == 413
        assert c.get(f"/api/sessions/{session}/workspace").content == before
        written(c, session, {"fits.txt": b"small"})


# the runner lost while paused


def test_writes_to_a_paused_session_survive_losing_its_runner(tmp_path: Path) -> None:
    with Cluster(tmp_path).start() as lost, lost.client() as c:
        deploy(c, AGENT, make_agent_folder(tmp_path, AGENT))
        lost.add_runners("first")
        session = str(create_session(c, AGENT)["id"])
        run(c, session, "printf before > before.txt")
        assert post_ok(c, f"/api/sessions/{session}/pause")["status"] == "paused"
        written(c, session, {"paused.txt": b"written to the paused sandbox"})
        lost.runners["first"].stop(signal.SIGKILL)
        lost.wait_for_runners("first", state="lost")
        written(c, session, {"after.txt": b"written with no runner"})
        assert read(c, session, "after.txt").headers["x-ash-source"] == "snapshot"
        lost.add_runners("second")
        assert post_ok(c, f"/api/sessions/{session}/resume")["runnerId"] == "second"
        assert cat(c, session, "after.txt") == "written with no runner"
        assert cat(c, session, "before.txt") == "before"
        assert cat(c, session, "paused.txt") == "written to the paused sandbox"
