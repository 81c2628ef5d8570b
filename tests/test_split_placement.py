"""Coordinator mode places sessions on registered runners: least-loaded first, never on a
drained runner, all of a runner's sessions over one gRPC connection, 503 when none can."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from bench.h2_client import RawH2Client
from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.split_cluster import Cluster, session_of
from tests.sse_client import reply_text
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path).start() as running:
        yield running


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.client() as c:
        yield c


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def established_connections(port: int) -> int:
    """TCP connections accepted on local `port` (loopback, IPv4 and IPv6)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, _remote, state = line.split()[1:4]
                if int(local.rpartition(":")[2], 16) == port and state == "01":
                    count += 1
    return count


def test_sessions_spread_over_runners_by_least_load(cluster, client, tmp_path) -> None:
    cluster.add_runners("r1", "r2", "r3")
    deploy(client, "echo", make_agent_folder(tmp_path))
    placed = Counter(create_session(client, "echo")["runnerId"] for _ in range(6))
    assert placed == {"r1": 2, "r2": 2, "r3": 2}
    runners = cluster.runner_states()
    assert {r: runners[r]["sessions"] for r in runners} == {"r1": 2, "r2": 2, "r3": 2}


def test_drained_runner_gets_no_new_sessions_and_keeps_its_own(cluster, client, tmp_path) -> None:
    cluster.add_runners("r1", "r2")
    deploy(client, "echo", make_agent_folder(tmp_path))
    first = create_session(client, "echo")
    drained = first["runnerId"]
    response = client.post(f"/api/runners/{drained}/drain")
    assert response.status_code == 200
    assert response.json()["runner"]["state"] == "draining"
    placed = {create_session(client, "echo")["runnerId"] for _ in range(4)}
    assert drained not in placed
    assert "still here" in reply_text(send_message(client, first["id"], "still here"))
    assert cluster.runner_states()[drained]["state"] == "draining"


def test_all_sessions_on_a_runner_share_one_grpc_connection(cluster, client, tmp_path) -> None:
    cluster.add_runners("r1")
    runner = cluster.runners["r1"]
    deploy(client, "echo", make_agent_folder(tmp_path))
    sessions = [create_session(client, "echo")["id"] for _ in range(4)]
    replies: dict[str, str] = {}

    def converse(session_id: str) -> None:
        with cluster.client() as own:
            replies[session_id] = reply_text(send_message(
                own, session_id, f"hi from {session_id}",
                options={"tokenIntervalMs": 20, "tokens": 10}))

    threads = [threading.Thread(target=converse, args=(sid,)) for sid in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(f"hi from {sid}" in replies[sid] for sid in sessions)
    assert established_connections(runner.port) == 1


def test_no_runner_means_503_with_a_clear_message(cluster, client, tmp_path) -> None:
    deploy(client, "echo", make_agent_folder(tmp_path))
    response = client.post("/api/sessions", json={"agent": "echo"})
    assert response.status_code == 503
    assert "no runner available" in response.json()["error"]
    assert client.get("/api/sessions").json()["sessions"] == []


def test_runner_list_shows_address_capacity_heartbeat_and_state(cluster, client) -> None:
    cluster.add_runners("r1")
    runner = cluster.runners["r1"]
    listed = client.get("/api/runners").json()["runners"]
    assert len(listed) == 1
    entry = listed[0]
    assert entry["id"] == "r1"
    assert entry["address"] == runner.address
    assert entry["state"] == "healthy"
    assert entry["capacity"] == {"active": 0, "warming": 0, "max": runner.max_sandboxes}
    assert entry["lastHeartbeat"] >= entry["registeredAt"] > 0
    anonymous = httpx.get(f"{cluster.gateway.url}/api/runners")
    assert anonymous.status_code == 401


def test_runner_without_the_secret_is_refused(cluster, client) -> None:
    impostor = cluster.add_runner("impostor", secret="not-the-secret")
    assert impostor.wait() == 2
    assert "refused registration" in impostor.log_path.read_text()
    assert client.get("/api/runners").json()["runners"] == []


def test_calls_without_the_secret_are_unauthenticated_on_both_sides(cluster) -> None:
    cluster.add_runners("r1")
    with grpc.insecure_channel(cluster.grpc_address) as channel:
        with pytest.raises(grpc.RpcError) as refused_by_gateway:
            pb_grpc.RunnerRegistryStub(channel).Register(pb.RegisterRequest(
                runner_id="x", host="127.0.0.1", port=1, max_sandboxes=1), timeout=10)
    with grpc.insecure_channel(cluster.runners["r1"].address) as channel:
        with pytest.raises(grpc.RpcError) as refused_by_runner:
            pb_grpc.RunnerStub(channel).Stats(pb.StatsRequest(), timeout=10,
                                              metadata=(("x-ash-internal-secret", "guess"),))
    assert refused_by_gateway.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused_by_runner.value.code() == grpc.StatusCode.UNAUTHENTICATED




def test_a_held_reader_stalls_only_its_own_session_on_the_shared_connection(
    cluster, client, tmp_path
) -> None:
    cluster.add_runners("r1")
    deploy(client, "echo", make_agent_folder(tmp_path))
    slow, fast = (create_session(client, "echo")["id"] for _ in range(2))
    raw = RawH2Client(cluster.gateway.url, timeout=60)
    auth = [("authorization", f"Bearer {cluster.gateway.api_key}"),
            ("content-type", "application/json")]
    try:
        held = raw.request("POST", f"/api/sessions/{slow}/messages", headers=auth,
                           body=b'{"content": "flood", "options": {"tokens": 20000}}',
                           auto_ack=False)
        raw.pump_for(1.0)
        gateway_rss = rss_kib(cluster.gateway.process.pid)
        paused_at = session_of(client, slow)["lastEventId"]
        raw.pump_for(1.0)
        assert session_of(client, slow)["lastEventId"] == paused_at
        assert paused_at < 10_000

        other = raw.request("POST", f"/api/sessions/{fast}/messages", headers=auth,
                            body=b'{"content": "meanwhile", "options": {"tokens": 2000}}')
        started = time.monotonic()
        assert raw.wait_response(other).body.endswith(b'"status":"ok"}\n\n')
        assert time.monotonic() - started < 10
        assert raw.streams[held].ended is False
        assert rss_kib(cluster.gateway.process.pid) - gateway_rss < 20 * 1024

        raw.open_window(held)
        flood = bytes(raw.wait_response(held).body)
        assert flood.count(b"event: text_delta") == 20_000
        assert flood.endswith(b'"status":"ok"}\n\n')
    finally:
        raw.close()
