"""Every operation in the route table, called with valid input over HTTP/1.1 and HTTP/2,
standalone and via a runner over gRPC: each answers with a status it declares, and a JSON
body that matches its declared schema (the OpenAPI document at /docs/json)."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.operation import JSON
from gateway.api.table import OPERATIONS
from tests.conftest import make_agent_folder, make_client
from tests.gateway_process import GatewayProcess
from tests.split_cluster import SECRET, Cluster
from tests.sse_client import parse_sse
from tests.test_openapi import Document, check
from tests.test_session_files import tar_gz


@dataclass
class Tour:
    """Calls operations through one client and records which ones it called."""

    client: httpx.Client
    document: Document
    protocol: str
    called: set[tuple[str, str]] = field(default_factory=set)

    def call(self, method: str, template: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        assert response.http_version == self.protocol
        assert response.is_success, (method, path, response.status_code, response.text)
        self.called.add((method, template))
        if response.headers.get("content-type", "").startswith(JSON):
            check(self.document, method, template, response)
        return response

    def rejoin(self, session_id: str) -> str:
        """The first event name `/stream` replays from the start (the stream stays open)."""
        path = f"/api/sessions/{session_id}/stream"
        with self.client.stream("GET", path, params={"after": "0"}) as response:
            assert response.status_code == 200 and response.http_version == self.protocol
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            first = next(lines)
            while not first.startswith("event:"):
                first = next(lines)
        self.called.add(("GET", "/api/sessions/{id}/stream"))
        return first.removeprefix("event:").strip()

    def turn(self, session_id: str, content: str) -> list[str]:
        """A turn's SSE event names, read to its end."""
        path = f"/api/sessions/{session_id}/messages"
        with self.client.stream("POST", path, json={"content": content}) as response:
            assert response.status_code == 200 and response.http_version == self.protocol
            events = parse_sse(response.iter_raw())
        self.called.add(("POST", "/api/sessions/{id}/messages"))
        return [event.event for event in events]


@pytest.fixture(params=["standalone", "via-runner"])
def gateway_of_mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayProcess]:
    if request.param == "standalone":
        gateway = GatewayProcess(tmp_path / "data",
                                 extra_env={"ASH_INTERNAL_SECRET": SECRET}).start()
        try:
            yield gateway
        finally:
            gateway.stop()
    else:
        with Cluster(tmp_path).start() as cluster:
            cluster.add_runner("r1")
            cluster.wait_for_runners("r1")
            yield cluster.gateway


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tour_queue(tour: Tour) -> None:
    """A queued prompt run in a new session; another, for a session kept busy by a long
    turn, waits for its retry and is cancelled. Both sessions are ended after."""
    call, client = tour.call, tour.client
    done = call("POST", "/api/queue", "/api/queue",
                json={"agentName": "echo", "prompt": "queued", "priority": 1}).json()["item"]
    busy = client.post("/api/sessions", json={"agent": "echo"}).json()["session"]["id"]
    with client.stream("POST", f"/api/sessions/{busy}/messages", json={
            "content": "slow", "options": {"tokenIntervalMs": 200, "tokens": 100}}) as turn:
        next(turn.iter_raw())  # the turn goes on without its client
    waiting = call("POST", "/api/queue", "/api/queue", json={
        "agentName": "echo", "prompt": "later", "sessionId": busy}).json()["item"]
    deadline = time.monotonic() + 30
    while (call("GET", "/api/queue/{id}", f"/api/queue/{waiting['id']}").json()["item"]
           ["retryCount"]) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = call("DELETE", "/api/queue/{id}", f"/api/queue/{waiting['id']}").json()
    assert cancelled["item"]["status"] == "cancelled"
    client.post(f"/api/sessions/{busy}/interrupt")
    while (item := call("GET", "/api/queue/{id}", f"/api/queue/{done['id']}")
           .json()["item"])["status"] != "completed":
        assert time.monotonic() < deadline, item
        time.sleep(0.05)
    listed = call("GET", "/api/queue", "/api/queue", params={"status": "cancelled"}).json()
    assert [i["id"] for i in listed["items"]] == [waiting["id"]]
    stats = call("GET", "/api/queue/stats", "/api/queue/stats").json()["stats"]
    assert (stats["completed"], stats["cancelled"]) == (1, 1)
    for session_id in (busy, item["sessionId"]):
        assert client.delete(f"/api/sessions/{session_id}").status_code == 200


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/2"])
def test_every_operation_answers_as_declared(
    gateway_of_mode: GatewayProcess, tmp_path: Path, protocol: str,
) -> None:
    gateway = gateway_of_mode
    with make_client(gateway, "h2" if protocol == "HTTP/2" else "http1.1") as client:
        document = client.get("/docs/json").json()
        tour = Tour(client, document, protocol)
        call = tour.call
        call("GET", "/health", "/health")
        call("GET", "/docs/json", "/docs/json")
        call("GET", "/docs", "/docs")
        call("GET", "/metrics", "/metrics")
        call("GET", "/api/runners", "/api/runners")
        made = call("POST", "/api/api-keys", "/api/api-keys", json={"label": "tour"}).json()
        keys = call("GET", "/api/api-keys", "/api/api-keys").json()["keys"]
        assert {key["id"] for key in keys} == {"env", made["id"]}
        call("DELETE", "/api/api-keys/{id}", f"/api/api-keys/{made['id']}")
        tenant_key = call("POST", "/api/internal/api-keys", "/api/internal/api-keys",
                          json={"tenantId": "toured"},
                          headers={"authorization": f"Bearer {SECRET}"}).json()
        assert tenant_key["tenantId"] == "toured"
        call("POST", "/api/agents", "/api/agents",
             json={"name": "echo", "path": str(make_agent_folder(tmp_path))})
        call("GET", "/api/agents", "/api/agents")
        call("GET", "/api/agents/{name}", "/api/agents/echo")
        call("POST", "/api/agents", "/api/agents", json={
            "name": "uploaded", "systemPrompt": "Be brief.",
            "files": [{"path": "agent.json", "content": b64(b'{"backend": "mock"}')}]})
        call("PATCH", "/api/agents/{name}", "/api/agents/uploaded",
             json={"env": {"TONE": "dry"}})
        call("GET", "/api/agents/{name}/config", "/api/agents/uploaded/config")
        patched = call("PATCH", "/api/agents/{name}/config", "/api/agents/uploaded/config",
                       json={"description": "toured"}).json()["config"]
        assert patched["description"] == "toured"
        call("POST", "/api/agents/{name}/files", "/api/agents/uploaded/files",
             json={"files": [{"path": "notes/tips.md", "content": b64(b"tip")}]})
        agent_files = call("GET", "/api/agents/{name}/files", "/api/agents/uploaded/files")
        assert "notes/tips.md" in {f["path"] for f in agent_files.json()["files"]}
        tip = call("GET", "/api/agents/{name}/files/{path+}",
                   "/api/agents/uploaded/files/notes/tips.md", params={"format": "json"})
        assert tip.json()["content"] == "tip"
        call("DELETE", "/api/agents/{name}/files/{path+}",
             "/api/agents/uploaded/files/notes/tips.md")

        versions = "/api/agents/echo/versions"
        version_path = "/api/agents/{name}/versions/{versionNumber}"
        call("POST", "/api/agents/{name}/versions", versions,
             json={"systemPrompt": "You are the toured version.", "releaseNotes": "first"})
        call("POST", "/api/agents/{name}/versions", versions, json={"cloneFrom": 1})
        call("GET", "/api/agents/{name}/versions", versions)
        call("PATCH", version_path, f"{versions}/2", json={"name": "clone"})
        call("GET", version_path, f"{versions}/2")
        call("POST", f"{version_path}/activate", f"{versions}/1/activate")
        call("DELETE", version_path, f"{versions}/2")

        credential = call("POST", "/api/credentials", "/api/credentials", json={
            "type": "anthropic", "key": "sk-ant-toured", "label": "tour"}).json()["credential"]
        sid = call("POST", "/api/sessions", "/api/sessions", json={
            "agent": "echo", "credentialId": credential["id"]}).json()["session"]["id"]
        listed_credentials = call("GET", "/api/credentials", "/api/credentials").json()
        assert listed_credentials["credentials"][0]["lastUsedAt"] is not None
        base = f"/api/sessions/{sid}"
        call("GET", "/api/sessions", "/api/sessions")
        call("GET", "/api/sessions/{id}", base)
        configured = call("PATCH", "/api/sessions/{id}/config", f"{base}/config",
                          json={"model": "claude-sonnet-4-5"}).json()["session"]
        assert configured["config"]["model"] == "claude-sonnet-4-5"
        assert tour.turn(sid, "my name is Ada")[-1] == "done"
        assert tour.rejoin(sid) == "session_start"
        call("GET", "/api/sessions/{id}/stream/events", f"{base}/stream/events")
        timeline = call("GET", "/api/sessions/{id}/events", f"{base}/events").json()["events"]
        assert "turn_complete" in {event["type"] for event in timeline}
        messages = call("GET", "/api/sessions/{id}/messages", f"{base}/messages").json()
        assert [m["role"] for m in messages["messages"]][:2] == ["user", "assistant"]
        call("GET", "/api/sessions/{id}/logs", f"{base}/logs", params={"after": "-1"})
        ran = call("POST", "/api/sessions/{id}/exec", f"{base}/exec",
                   json={"command": "echo hi", "timeout": 10_000})
        assert ran.json()["stdout"] == "hi\n"
        call("POST", "/api/sessions/{id}/interrupt", f"{base}/interrupt")

        call("POST", "/api/sessions/{id}/files", f"{base}/files",
             json={"files": [{"path": "notes.txt", "content": b64(b"hi")}]})
        listed = call("GET", "/api/sessions/{id}/files", f"{base}/files").json()
        assert "notes.txt" in [f["path"] for f in listed["files"]]
        read = call("GET", "/api/sessions/{id}/files/{path+}", f"{base}/files/notes.txt",
                    params={"format": "json"})
        assert read.json()["content"] == "hi"
        call("DELETE", "/api/sessions/{id}/files/{path+}", f"{base}/files/notes.txt")
        call("POST", "/api/sessions/{id}/workspace", f"{base}/workspace",
             json={"bundle": b64(tar_gz([("restored.txt", b"back", None)]))})
        archive = call("GET", "/api/sessions/{id}/workspace", f"{base}/workspace")
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.content))) as tar:
            assert tar.extractfile("restored.txt").read() == b"back"

        tour_queue(tour)
        attachment = call("POST", "/api/sessions/{id}/attachments", f"{base}/attachments",
                          json={"filename": "brief.txt", "content": b64(b"attached"),
                                "mimeType": "text/plain"}).json()["attachment"]
        seen = call("POST", "/api/sessions/{id}/exec", f"{base}/exec",
                    json={"command": f"cat {attachment['path']}"}).json()
        assert seen["stdout"] == "attached"
        listed = call("GET", "/api/sessions/{id}/attachments", f"{base}/attachments").json()
        assert [a["id"] for a in listed["attachments"]] == [attachment["id"]]
        download = call("GET", "/api/attachments/{id}", f"/api/attachments/{attachment['id']}")
        assert (download.content, download.headers["x-content-type-options"]) == (
            b"attached", "nosniff")
        call("DELETE", "/api/attachments/{id}", f"/api/attachments/{attachment['id']}")
        usage = call("GET", "/api/usage", "/api/usage", params={"sessionId": sid}).json()
        assert "message" in {event["eventType"] for event in usage["events"]}
        totals = call("GET", "/api/usage/stats", "/api/usage/stats",
                      params={"agentName": "echo", "sessionId": sid}).json()["stats"]
        assert totals["totalMessages"] == 1
        analytics = call("GET", "/api/analytics", "/api/analytics",
                         params={"after": "2000-01-01T00:00:00Z"}).json()
        assert analytics["usage"]["totalMessages"] >= totals["totalMessages"]

        call("POST", "/api/sessions/{id}/pause", f"{base}/pause")
        call("POST", "/api/sessions/{id}/resume", f"{base}/resume")
        fork = call("POST", "/api/sessions/{id}/fork", f"{base}/fork").json()["session"]
        call("POST", "/api/sessions/{id}/stop", f"{base}/stop")
        call("DELETE", "/api/sessions/{id}", f"/api/sessions/{fork['id']}")
        call("DELETE", "/api/sessions/{id}", base)
        call("DELETE", "/api/agents/{name}", "/api/agents/echo")
        call("DELETE", "/api/credentials/{id}", f"/api/credentials/{credential['id']}")
        call("DELETE", "/api/agents/{name}", "/api/agents/uploaded")
        runners = call("GET", "/api/runners", "/api/runners").json()["runners"]
        for runner in runners:
            call("POST", "/api/runners/{id}/drain", f"/api/runners/{runner['id']}/drain")

    untoured = {(op.method, op.path) for op in OPERATIONS} - tour.called
    if not runners:
        untoured.discard(("POST", "/api/runners/{id}/drain"))
    assert untoured == set()
