"""Rate limits per client address and per API key: 429 with `Retry-After` and the JSON
error body once a client is over, allowed again once its bucket refills. Off by default."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway.rate_limit import ConfigError, RateLimiter, RateLimitSettings, TokenBuckets
from tests.conftest import deploy, make_agent_folder, make_client
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import running_gateway

WINDOW = 2.0


def over_limit(response: httpx.Response) -> int:
    """The Retry-After seconds, after checking the 429 and its JSON body."""
    assert response.status_code == 429, response.text
    assert response.json()["statusCode"] == 429
    assert "rate limit exceeded" in response.json()["error"]
    retry = int(response.headers["retry-after"])
    assert 1 <= retry <= WINDOW
    return retry


def test_requests_over_the_global_limit_get_429_then_pass_after_the_window(
    tmp_path: Path,
) -> None:
    env = {"ASH_RATE_LIMIT_MAX": "3", "ASH_RATE_LIMIT_WINDOW": str(WINDOW)}
    with running_gateway(tmp_path / "data", extra_env=env) as gateway, \
            make_client(gateway) as client:
        for _ in range(3):
            assert client.get("/api/agents").status_code == 200
        retry = over_limit(client.get("/api/agents"))
        assert client.get("/health").status_code == 200  # not an /api/ route
        time.sleep(retry)
        assert client.get("/api/agents").status_code == 200


def test_creates_have_their_own_tighter_limit(tmp_path: Path) -> None:
    env = {"ASH_RATE_LIMIT_CREATES": "2", "ASH_RATE_LIMIT_MAX": "100",
           "ASH_RATE_LIMIT_WINDOW": str(WINDOW)}
    with running_gateway(tmp_path / "data", extra_env=env) as gateway, \
            make_client(gateway) as client:
        folder = make_agent_folder(tmp_path)
        deploy(client, "echo", folder)
        assert client.post("/api/sessions", json={"agent": "echo"}).status_code == 201
        over_limit(client.post("/api/sessions", json={"agent": "echo"}))
        over_limit(client.post("/api/agents", json={"name": "other", "path": str(folder)}))
        assert client.get("/api/agents").status_code == 200  # reads still pass
        assert [a["name"] for a in client.get("/api/agents").json()["agents"]] == ["echo"]
        time.sleep(WINDOW / 2)
        assert client.post("/api/sessions", json={"agent": "echo"}).status_code == 201


def test_requests_without_a_valid_key_are_limited_by_address(tmp_path: Path) -> None:
    env = {"ASH_RATE_LIMIT_MAX": "2", "ASH_RATE_LIMIT_WINDOW": str(WINDOW)}
    with running_gateway(tmp_path / "data", extra_env=env) as gateway, \
            httpx.Client(base_url=gateway.url) as anonymous:
        wrong = {"authorization": "Bearer guessed"}
        assert anonymous.get("/api/agents", headers=wrong).status_code == 401
        assert anonymous.get("/api/agents", headers=wrong).status_code == 401
        over_limit(anonymous.get("/api/agents", headers=wrong))


def test_the_gateway_does_not_limit_by_default(gateway: GatewayProcess,
                                                client: httpx.Client) -> None:
    statuses = {client.get("/api/agents").status_code for _ in range(50)}
    assert statuses == {200}


def test_each_api_key_has_its_own_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimitSettings(max_requests=1, window=10), clock=lambda: now[0])
    assert limiter.check("GET", "/api/agents", ("key", b"Bearer a")) is None
    assert limiter.check("GET", "/api/agents", ("key", b"Bearer b")) is None
    refusal = limiter.check("GET", "/api/agents", ("key", b"Bearer a"))
    assert refusal is not None and refusal.retry_after == 10
    now[0] = 10.0
    assert limiter.check("GET", "/api/agents", ("key", b"Bearer a")) is None


def test_a_bucket_refills_evenly_over_the_window() -> None:
    now = [0.0]
    buckets = TokenBuckets(4, 8.0, clock=lambda: now[0])
    assert [buckets.take("c") for _ in range(4)] == [0.0] * 4
    assert buckets.take("c") == pytest.approx(2.0)
    now[0] = 2.0
    assert buckets.take("c") == 0.0


@pytest.mark.parametrize("env", [{"ASH_RATE_LIMIT_MAX": "many"},
                                 {"ASH_RATE_LIMIT_WINDOW": "0"},
                                 {"ASH_RATE_LIMIT_WINDOW": "nan"}])
def test_a_bad_setting_is_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        RateLimitSettings.from_env(env)


def test_rate_limit_on_takes_the_reference_defaults() -> None:
    settings = RateLimitSettings.from_env({"ASH_RATE_LIMIT": "1"})
    assert (settings.max_requests, settings.max_creates, settings.window) == (1500, 20, 900)
    assert not RateLimitSettings.from_env({}).enabled
