"""The OpenAPI document at /docs/json: valid, complete, and true of the real responses."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from gateway.api.operation import JSON, openapi_path
from gateway.api.table import OPERATIONS
from tests.conftest import create_session, deploy, send_message
from tests.gateway_process import GatewayProcess

Document = dict[str, Any]


@pytest.fixture
def document(gateway: GatewayProcess) -> Document:
    with httpx.Client(base_url=gateway.url, http2=True, http1=False) as client:
        response = client.get("/docs/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    return response.json()


def check(document: Document, method: str, template: str, response: httpx.Response) -> None:
    """`response` matches what the document declares for its status (a 2xx must be declared
    by its own code; an error may fall to `default`)."""
    declared = document["paths"][openapi_path(template)][method.lower()]["responses"]
    status = str(response.status_code)
    if response.is_success:
        assert status in declared, f"{method} {template}: {status} is not declared"
    entry = declared.get(status, declared["default"])
    assert response.headers["content-type"].startswith(JSON), response.headers
    schema = entry["content"][JSON]["schema"]
    rooted = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "components": document["components"], "allOf": [schema]}
    jsonschema.validate(response.json(), rooted, cls=jsonschema.Draft202012Validator)


def test_served_document_is_valid_openapi_3_1(document: Document) -> None:
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "Ash gateway"
    validate(document)


def test_every_route_in_the_table_is_in_the_document(document: Document) -> None:
    missing = [(op.method, op.path) for op in OPERATIONS
               if op.method.lower() not in document["paths"].get(openapi_path(op.path), {})]
    assert missing == []
    served = sum(len(methods) for methods in document["paths"].values())
    assert served == len(OPERATIONS)


def test_api_operations_require_the_bearer_key_and_docs_do_not(document: Document) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer"}
    for path, methods in document["paths"].items():
        for op in methods.values():
            keyed = path.startswith("/api/") or path == "/metrics"
            assert op["security"] == ([{"bearer": []}] if keyed else [])


def test_docs_page_is_html_that_loads_the_document(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url, http2=True, http1=False) as client:
        page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/docs/json" in page.text
    assert "<script src" not in page.text and "https://" not in page.text


def test_docs_routes_are_public_while_api_routes_demand_the_key(
    gateway: GatewayProcess,
) -> None:
    with httpx.Client(base_url=gateway.url, http2=True, http1=False) as client:
        assert client.get("/docs/json").status_code == 200
        assert client.get("/docs").status_code == 200
        assert client.get("/api/agents").status_code == 401


def test_real_responses_match_their_declared_schemas(
    gateway: GatewayProcess, client: httpx.Client, document: Document, agent_folder: Path,
) -> None:
    def call(method: str, template: str, path: str, **kwargs: Any) -> httpx.Response:
        response = client.request(method, path, **kwargs)
        check(document, method, template, response)
        return response

    call("GET", "/health", "/health")
    call("GET", "/docs/json", "/docs/json")
    call("GET", "/api/runners", "/api/runners")
    deploy(client, "echo", agent_folder)
    call("GET", "/api/agents", "/api/agents")
    call("GET", "/api/agents/{name}", "/api/agents/echo")
    session = create_session(client, "echo")
    sid = session["id"]
    base = f"/api/sessions/{sid}"
    call("GET", "/api/sessions", "/api/sessions")
    call("GET", "/api/sessions/{id}", base)
    assert send_message(client, sid, "hello")[-1].event == "done"
    call("GET", "/api/sessions/{id}/stream/events", f"{base}/stream/events")
    call("GET", "/api/sessions/{id}/events", f"{base}/events")
    call("GET", "/api/sessions/{id}/messages", f"{base}/messages")
    call("GET", "/api/sessions/{id}/logs", f"{base}/logs")
    call("POST", "/api/sessions/{id}/exec", f"{base}/exec", json={"command": "echo hi"})
    call("POST", "/api/sessions/{id}/files", f"{base}/files", json={
        "files": [{"path": "notes.txt", "content": base64.b64encode(b"hi").decode()}]})
    listed = call("GET", "/api/sessions/{id}/files", f"{base}/files").json()
    assert "notes.txt" in [f["path"] for f in listed["files"]]
    call("GET", "/api/sessions/{id}/files/{path+}", f"{base}/files/notes.txt",
         params={"format": "json"})
    call("DELETE", "/api/sessions/{id}/files/{path+}", f"{base}/files/notes.txt")
    call("POST", "/api/sessions/{id}/pause", f"{base}/pause")
    call("POST", "/api/sessions/{id}/resume", f"{base}/resume")
    fork = call("POST", "/api/sessions/{id}/fork", f"{base}/fork").json()["session"]
    call("POST", "/api/sessions/{id}/stop", f"{base}/stop")
    call("GET", "/api/sessions/{id}/logs", f"{base}/logs")
    call("DELETE", "/api/sessions/{id}", f"/api/sessions/{fork['id']}")
    call("DELETE", "/api/sessions/{id}", base)
    call("DELETE", "/api/agents/{name}", "/api/agents/echo")
    notes = {"path": "notes.md", "content": base64.b64encode(b"notes").decode()}
    call("POST", "/api/agents", "/api/agents", json={
        "name": "uploaded", "systemPrompt": "hi", "env": {"K": "v"}, "files": [notes]})
    call("PATCH", "/api/agents/{name}", "/api/agents/uploaded", json={"config": {"a": 1}})
    call("GET", "/api/agents/{name}/config", "/api/agents/uploaded/config")
    call("PATCH", "/api/agents/{name}/config", "/api/agents/uploaded/config", json={"b": 2})
    agent_files = "/api/agents/uploaded/files"
    call("POST", "/api/agents/{name}/files", agent_files, json={"files": [notes]})
    call("GET", "/api/agents/{name}/files", agent_files)
    call("GET", "/api/agents/{name}/files/{path+}", f"{agent_files}/notes.md")
    call("DELETE", "/api/agents/{name}/files/{path+}", f"{agent_files}/notes.md")
    errors = [
        call("GET", "/api/sessions/{id}", "/api/sessions/no-such-session"),
        call("GET", "/api/agents/{name}", "/api/agents/no-such-agent"),
        call("POST", "/api/sessions", "/api/sessions", json={"agent": 7}),
        call("GET", "/api/sessions", "/api/sessions", params={"limit": "many"}),
        call("POST", "/api/runners/{id}/drain", "/api/runners/nope/drain"),
    ]
    assert [e.status_code for e in errors] == [404, 404, 400, 400, 409]
    unauthorized = httpx.get(f"{gateway.url}/api/agents")
    check(document, "GET", "/api/agents", unauthorized)
    assert unauthorized.status_code == 401
