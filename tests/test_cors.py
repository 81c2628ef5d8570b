"""CORS from ASH_ALLOWED_ORIGINS: a listed origin gets the allow headers on preflights
(answered without the key) and on actual requests, streamed ones too; an unlisted origin,
or a gateway with no list, gets none."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import create_session, deploy, make_client, send_message
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import module_gateway, running_gateway

ALLOWED = "https://app.example"
gateway, client = module_gateway(
    "cors", extra_env={"ASH_ALLOWED_ORIGINS": f"{ALLOWED}, https://other.example"})


def preflight(gateway: GatewayProcess, origin: str, path: str = "/api/sessions"
              ) -> httpx.Response:
    with httpx.Client(base_url=gateway.url) as anonymous:
        return anonymous.options(path, headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})


def test_a_preflight_from_a_listed_origin_is_allowed_without_a_key(
    gateway: GatewayProcess,
) -> None:
    response = preflight(gateway, ALLOWED)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"]
    assert response.headers["vary"] == "origin"


def test_a_preflight_from_an_unlisted_origin_gets_no_cors_headers(
    gateway: GatewayProcess,
) -> None:
    response = preflight(gateway, "https://evil.example")
    assert response.status_code == 204
    assert not [name for name in response.headers if name.startswith("access-control-")]


def test_an_actual_request_from_a_listed_origin_carries_the_allow_origin(
    client: httpx.Client,
) -> None:
    response = client.get("/api/agents", headers={"origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "retry-after" in response.headers["access-control-expose-headers"]
    denied = client.get("/api/agents/nobody", headers={"origin": ALLOWED})
    assert denied.status_code == 404
    assert denied.headers["access-control-allow-origin"] == ALLOWED


def test_an_unlisted_origin_or_none_gets_no_cors_headers(client: httpx.Client) -> None:
    for headers in ({"origin": "https://evil.example"}, {}):
        response = client.get("/api/agents", headers=headers)
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


def test_an_options_request_that_is_no_preflight_still_needs_the_key(
    gateway: GatewayProcess,
) -> None:
    with httpx.Client(base_url=gateway.url) as anonymous:
        assert anonymous.options("/api/agents").status_code == 401


def test_a_streamed_turn_carries_the_cors_headers(client: httpx.Client,
                                                  agent_folder: Path) -> None:
    deploy(client, "cors-echo", agent_folder)
    sid = create_session(client, "cors-echo")["id"]
    with client.stream("POST", f"/api/sessions/{sid}/messages", json={"content": "hi"},
                       headers={"origin": ALLOWED}) as response:
        assert response.headers["access-control-allow-origin"] == ALLOWED
        response.read()
    assert send_message(client, sid, "again")[-1].data["status"]


@pytest.mark.parametrize("origin", [ALLOWED, "https://evil.example"])
def test_without_a_list_no_origin_gets_cors_headers(tmp_path: Path, origin: str) -> None:
    with running_gateway(tmp_path / "data") as plain, make_client(plain) as plain_client:
        response = plain_client.get("/api/agents", headers={"origin": origin})
        assert "access-control-allow-origin" not in response.headers
        bare = preflight(plain, origin)
        assert bare.status_code == 204  # still answered without the key
        assert not [name for name in bare.headers if name.startswith("access-control-")]
