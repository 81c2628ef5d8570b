"""Every /api route demands the API key; /health does not."""

from __future__ import annotations

import httpx
import pytest

from gateway.api.table import OPERATIONS
from tests.gateway_process import GatewayProcess

API_ROUTES = [(op.method, op.path) for op in OPERATIONS if op.path.startswith("/api/")]


def concrete(template: str) -> str:
    return template.replace("{name}", "some-agent").replace("{id}", "some-id") \
        .replace("{path+}", "some/file.txt")


@pytest.mark.parametrize(("method", "pattern"), API_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic abc", "Bearer "])
def test_api_route_without_valid_key_is_401(
    gateway: GatewayProcess, method: str, pattern: str, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=gateway.url, http1=False, http2=True) as client:
        response = client.request(method, concrete(pattern), headers=headers, json={})
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401


def test_every_api_route_is_covered_by_the_auth_walk() -> None:
    assert len(API_ROUTES) >= 25
    assert all(not op.public for op in OPERATIONS if op.path.startswith("/api/"))


def test_health_is_public(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url, http1=False, http2=True) as client:
        health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok"
    assert body["mode"] == "standalone"
    assert body["uptimeSeconds"] >= 0
    assert body["sandboxes"] == {"live": 0, "busy": 0}


def test_generated_key_is_kept_in_the_data_dir_readable_by_its_owner_only(tmp_path) -> None:
    gateway = GatewayProcess(tmp_path / "data", api_key=None).start()
    try:
        key_line = next(line for line in gateway.banner if line.startswith("API key: "))
        key = key_line.removeprefix("API key: ").strip()
    finally:
        gateway.stop()
    path = tmp_path / "data" / "initial-api-key"
    assert path.read_text().strip() == key
    assert path.stat().st_mode & 0o777 == 0o600


def test_no_key_file_when_the_key_comes_from_the_environment(gateway: GatewayProcess) -> None:
    assert not (gateway.data_dir / "initial-api-key").exists()


def test_generated_key_is_printed_once_and_works(tmp_path) -> None:
    gateway = GatewayProcess(tmp_path / "data", api_key=None).start()
    try:
        key_line = next(line for line in gateway.banner if line.startswith("API key: "))
        key = key_line.removeprefix("API key: ").strip()
        assert key.startswith("ash_")
        with httpx.Client(base_url=gateway.url, http2=True, http1=False) as client:
            ok = client.get("/api/agents", headers={"authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    finally:
        gateway.stop()
    again = GatewayProcess(tmp_path / "data", api_key=None).start()
    try:
        assert not any(key in line for line in again.banner)
        for stored in (tmp_path / "data").glob("ash.db*"):
            assert key.encode() not in stored.read_bytes()
    finally:
        again.stop()
