"""Attachments: an upload is kept by the gateway and placed in the session's workspace
(`attachments/<id>/<filename>`), where the agent reads it; a download is always a download
(`nosniff`, `attachment` disposition, never an active type); the size limit
(ASH_MAX_ATTACHMENT_SIZE, lowered here) gives 413; bad input is 400 and stores nothing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_session, deploy, make_agent_folder, make_client
from tests.gateway_process import GatewayProcess
from tests.split_cluster import Cluster

LIMIT = 4096
AGENT = "echo"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("attachments")
    process = GatewayProcess(root / "data",
                             extra_env={"ASH_MAX_ATTACHMENT_SIZE": str(LIMIT)}).start()
    try:
        with make_client(process) as c:
            deploy(c, AGENT, make_agent_folder(root, AGENT))
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with make_client(gateway) as c:
        yield c


@pytest.fixture
def sid(client: httpx.Client) -> str:
    return str(create_session(client, AGENT)["id"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def upload(client: httpx.Client, sid: str, filename: str, data: bytes,
           **extra: Any) -> httpx.Response:
    return client.post(f"/api/sessions/{sid}/attachments",
                       json={"filename": filename, "content": b64(data), **extra})


def attached(client: httpx.Client, sid: str, filename: str, data: bytes,
             **extra: Any) -> dict[str, Any]:
    response = upload(client, sid, filename, data, **extra)
    assert response.status_code == 201, response.text
    return response.json()["attachment"]


def exec_in(client: httpx.Client, sid: str, command: str) -> dict[str, Any]:
    response = client.post(f"/api/sessions/{sid}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    return response.json()


def test_upload_answers_the_reference_attachment_record(client: httpx.Client, sid: str) -> None:
    attachment = attached(client, sid, "notes.txt", b"hello", mimeType="text/plain")
    assert attachment["sessionId"] == sid
    assert attachment["tenantId"] == "default"
    assert attachment["messageId"] == "unlinked"
    assert (attachment["filename"], attachment["mimeType"], attachment["size"]) == (
        "notes.txt", "text/plain", 5)
    assert attachment["path"] == f"attachments/{attachment['id']}/notes.txt"
    assert attachment["createdAt"].endswith("Z")
    default = attached(client, sid, "blob", b"\x00\x01")
    assert default["mimeType"] == "application/octet-stream"


def test_the_agent_reads_the_upload_in_its_workspace(client: httpx.Client, sid: str) -> None:
    attachment = attached(client, sid, "data.csv", b"a,b\n1,2\n", mimeType="text/csv")
    assert exec_in(client, sid, f"cat {attachment['path']}")["stdout"] == "a,b\n1,2\n"


def test_download_is_the_bytes_as_an_inert_attachment(client: httpx.Client, sid: str) -> None:
    data = bytes(range(256))
    attachment = attached(client, sid, "report final.pdf", data, mimeType="application/pdf")
    response = client.get(f"/api/attachments/{attachment['id']}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"] == (
        "attachment; filename*=UTF-8''report%20final.pdf")
    assert "sandbox" in response.headers["content-security-policy"]


@pytest.mark.parametrize("declared", ["text/html", "TEXT/HTML; charset=utf-8",
                                      "image/svg+xml", "application/javascript",
                                      "application/xhtml+xml", "made/up"])
def test_an_active_or_unknown_type_is_served_as_octet_stream(
    client: httpx.Client, sid: str, declared: str,
) -> None:
    attachment = attached(client, sid, "page.html", b"<script>alert(1)</script>",
                          mimeType=declared)
    assert attachment["mimeType"] == declared
    response = client.get(f"/api/attachments/{attachment['id']}")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")


def test_the_download_outlives_the_sandbox(client: httpx.Client, sid: str) -> None:
    attachment = attached(client, sid, "kept.bin", b"kept")
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    response = client.get(f"/api/attachments/{attachment['id']}")
    assert (response.status_code, response.content) == (200, b"kept")


def test_list_shows_the_sessions_attachments_in_upload_order(
    client: httpx.Client, sid: str,
) -> None:
    other = str(create_session(client, AGENT)["id"])
    first = attached(client, sid, "one.txt", b"1")
    second = attached(client, sid, "two.txt", b"2",
                      messageId="0D3C6E52-2B7E-4C84-9A53-1C2D3E4F5A6B")
    attached(client, other, "elsewhere.txt", b"3")
    listed = client.get(f"/api/sessions/{sid}/attachments").json()["attachments"]
    assert [a["id"] for a in listed] == [first["id"], second["id"]]
    assert listed[1]["messageId"] == "0d3c6e52-2b7e-4c84-9a53-1c2d3e4f5a6b"


def test_delete_forgets_the_attachment(client: httpx.Client, sid: str) -> None:
    attachment = attached(client, sid, "gone.txt", b"bye")
    response = client.delete(f"/api/attachments/{attachment['id']}")
    assert (response.status_code, response.content) == (204, b"")
    assert client.get(f"/api/attachments/{attachment['id']}").status_code == 404
    assert client.delete(f"/api/attachments/{attachment['id']}").status_code == 404
    assert client.get(f"/api/sessions/{sid}/attachments").json() == {"attachments": []}


def test_at_the_limit_is_accepted_and_over_it_is_413(client: httpx.Client, sid: str) -> None:
    assert upload(client, sid, "full.bin", b"x" * LIMIT).status_code == 201
    response = upload(client, sid, "over.bin", b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["statusCode"] == 413
    # a body larger than any attachment's base64 is refused before it is read whole
    huge = client.post(f"/api/sessions/{sid}/attachments",
                       json={"filename": "huge.bin", "content": "QUFB" * (5 * LIMIT)})
    assert huge.status_code == 413
    assert [a["filename"] for a in
            client.get(f"/api/sessions/{sid}/attachments").json()["attachments"]] == [
        "full.bin"]


def workspace_attachments(client: httpx.Client, sid: str) -> list[str]:
    listed = client.get(f"/api/sessions/{sid}/files").json()["files"]
    return [f["path"] for f in listed if f["path"].startswith("attachments/")]


@pytest.mark.parametrize("filename", ["a/b.txt", "../up.txt", "/etc/passwd", "a\\b.txt",
                                      ".", "..", "nul\x00.txt", "line\nbreak", "", "x" * 256,
                                      "é" * 128, 7, None])
def test_a_bad_filename_is_400_and_stores_nothing(
    client: httpx.Client, sid: str, filename: object,
) -> None:
    response = client.post(f"/api/sessions/{sid}/attachments",
                           json={"filename": filename, "content": b64(b"x")})
    assert response.status_code == 400, response.text
    assert "filename" in response.json()["error"]
    assert client.get(f"/api/sessions/{sid}/attachments").json() == {"attachments": []}
    assert workspace_attachments(client, sid) == []


@pytest.mark.parametrize("body", [
    {"filename": "a.txt"},
    {"filename": "a.txt", "content": "not base64!"},
    {"filename": "a.txt", "content": 5},
    {"filename": "a.txt", "content": "eA==", "mimeType": 3},
    {"filename": "a.txt", "content": "eA==", "mimeType": ""},
    {"filename": "a.txt", "content": "eA==", "mimeType": "text/plain\r\nX-Evil: 1"},
    {"filename": "a.txt", "content": "eA==", "messageId": "not-a-uuid"},
    {"filename": "a.txt", "content": "eA==", "messageId": 12},
    {"filename": "a.txt", "content": "eA==", "messageId": None},
    {"filename": "a.txt", "content": "eA==", "mimeType": None},
])
def test_bad_fields_are_400_and_store_nothing(
    client: httpx.Client, sid: str, body: dict[str, Any],
) -> None:
    response = client.post(f"/api/sessions/{sid}/attachments", json=body)
    assert response.status_code == 400, response.text
    assert client.get(f"/api/sessions/{sid}/attachments").json() == {"attachments": []}
    assert workspace_attachments(client, sid) == []


def test_unknown_ids_are_404_and_an_ended_session_410(client: httpx.Client, sid: str) -> None:
    assert upload(client, "no-such-session", "a.txt", b"x").status_code == 404
    assert client.get("/api/sessions/no-such-session/attachments").status_code == 404
    assert client.get("/api/attachments/no-such-attachment").status_code == 404
    assert client.delete("/api/attachments/no-such-attachment").status_code == 404
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert upload(client, sid, "late.txt", b"x").status_code == 410


def test_split_mode_places_the_upload_in_the_runners_workspace(tmp_path: Path) -> None:
    with Cluster(tmp_path).start() as cluster:
        cluster.add_runners("r1")
        with cluster.client() as c:
            deploy(c, AGENT, make_agent_folder(tmp_path, AGENT))
            sid = str(create_session(c, AGENT)["id"])
            attachment = attached(c, sid, "remote.txt", b"over grpc")
            assert exec_in(c, sid, f"cat {attachment['path']}")["stdout"] == "over grpc"
            assert c.post(f"/api/sessions/{sid}/stop").status_code == 200
            stopped = attached(c, sid, "stored.txt", b"into the stored state")
            assert c.post(f"/api/sessions/{sid}/resume").status_code == 200
            assert exec_in(c, sid, f"cat {stopped['path']}")["stdout"] == (
                "into the stored state")
