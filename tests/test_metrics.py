"""Prometheus metrics: /metrics on the gateway (behind the key), --metrics-port on the runner,
scraped by a real Prometheus server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.split_cluster import Cluster, free_port

pytestmark = pytest.mark.timeout(180)


def sample(text: str, name: str) -> float:
    """The value of the first sample line of `name` (any labels)."""
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_need_the_api_key(gateway) -> None:
    response = httpx.get(f"{gateway.url}/metrics")
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401


def test_a_turn_moves_the_first_event_histogram_and_the_stream_counters(
        client, agent_folder) -> None:
    before = client.get("/metrics").text
    assert sample(before, "ash_up") == 1
    deploy(client, "echo", agent_folder)
    session = create_session(client, "echo")
    send_message(client, session["id"], "hello metrics")
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    assert sample(after.text, "ash_first_event_seconds_count") == 1
    assert sample(after.text, "ash_turn_duration_seconds_count") == 1
    assert sample(after.text, "ash_events_streamed_total") > 0
    assert sample(after.text, "ash_bytes_streamed_total") > 0
    assert sample(after.text, "ash_sse_streams_open") == 0
    assert sample(after.text, "ash_active_sessions") == 1


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, int]]:
    metrics_port = free_port()
    with Cluster(tmp_path).start() as cluster:
        cluster.add_runner("r1", extra_args=["--metrics-port", str(metrics_port)])
        cluster.wait_for_runners("r1")
        yield cluster, metrics_port


def prometheus_query(url: str, query: str) -> list[dict]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


def test_a_real_prometheus_scrapes_the_gateway_and_the_runner(
        cluster: tuple[Cluster, int], tmp_path: Path) -> None:
    split, runner_metrics_port = cluster
    gateway = split.gateway
    gateway_hostport = gateway.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: gateway
    authorization:
      credentials: {gateway.api_key}
    static_configs:
      - targets: ["{gateway_hostport}"]
  - job_name: runner
    static_configs:
      - targets: ["127.0.0.1:{runner_metrics_port}"]
""")
    port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            session = create_session(client, "echo")
            send_message(client, session["id"], "a turn for prometheus")
        deadline = time.monotonic() + 60
        while True:
            try:
                up = {r["metric"]["job"]: float(r["value"][1])
                      for r in prometheus_query(url, "ash_up")}
                counted = prometheus_query(url, "ash_first_event_seconds_count")
            except httpx.TransportError:
                up, counted = {}, []
            if up == {"gateway": 1.0, "runner": 1.0} and counted \
                    and float(counted[0]["value"][1]) >= 1:
                break
            assert time.monotonic() < deadline, (up, counted)
            time.sleep(0.5)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=15)
