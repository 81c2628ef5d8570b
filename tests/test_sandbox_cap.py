"""The cap on live sandboxes, warm-pool ones counted in it: a real standalone gateway, a
runner's backend with real bwrap sandboxes, a real split deployment.

Beyond the cap a backend refuses a create (CapacityExceeded, RESOURCE_EXHAUSTED over
gRPC) and nothing starts; the gateway then frees an idle sandbox (least recently used
first), and refuses (503 with the JSON error body) only when every sandbox is busy;
ending a session frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc
import httpx
import pytest

from runner.backend import CapacityExceeded
from runner.local import LocalBackend
from runner.sandbox import BridgeSettings
from runner.workspace_state import pack_workspace
from tests.conftest import create_session, deploy, make_agent_folder, make_client
from tests.runner_fixtures import make_agent
from tests.sandbox_helpers import pool_of, running_gateway, wait_for_pool
from tests.split_cluster import SECRET, Cluster
from tests.test_stop_fork import slow_turn
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc
from wire.internal_auth import call_metadata

POOL_WAIT = 60.0


def refused(response: httpx.Response) -> str:
    """The refusal's message, after checking it is a 503 with the JSON error body."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["statusCode"] == 503
    assert "at capacity" in body["error"]
    return str(body["error"])


def test_gateway_refuses_sessions_beyond_its_cap_while_every_sandbox_is_busy(
    tmp_path: Path,
) -> None:
    """At the cap an idle sandbox is freed for the new session (tests/test_sandbox_reclaim.py);
    with every sandbox running a turn there is none to free, and the create is refused."""
    with running_gateway(tmp_path / "data", extra_args=["--max-sandboxes", "3"],
                         extra_env={"ASH_WARM_POOL": "1"}) as gateway, \
            make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        sessions = []
        for _ in range(3):
            wait_for_pool(client, 1)  # served warm: the spare is the slot the session takes
            sessions.append(create_session(client, "echo")["id"])
        assert pool_of(client)["ready"] == 0  # no room under the cap for another spare
        with contextlib.ExitStack() as turns:
            for sid in sessions:
                turns.enter_context(slow_turn(client, sid, tokens=400))
            message = refused(client.post("/api/sessions", json={"agent": "echo"}))
            print(f"\n4th session: 503 {message}")
            assert len(client.get("/api/sessions").json()["sessions"]) == 3
            ended = client.delete(f"/api/sessions/{sessions[0]}")
            assert ended.status_code == 200, ended.text
            wait_for_pool(client, 1)  # the freed slot first goes to a spare again
            create_session(client, "echo")
        assert client.get("/health").json()["status"] == "ok"


def test_gateway_counts_the_warm_pool_in_its_cap(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "data", extra_args=["--max-sandboxes", "1"],
                         extra_env={"ASH_WARM_POOL": "2"}) as gateway, \
            make_client(gateway) as client:
        pool = wait_for_pool(client, 1)
        assert pool["ready"] + pool["starting"] == 1


async def test_backend_refuses_a_create_beyond_its_cap(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "data", settings=BridgeSettings(), max_sandboxes=2)
    agent = make_agent(tmp_path)
    try:
        await backend.create("s1", agent)
        await backend.create("s2", agent)
        with pytest.raises(CapacityExceeded, match="2 of 2"):
            await backend.create("s3", agent)
        assert not backend.sandbox_dir("s3").exists()
        await backend.destroy("s1")
        await backend.create("s3", agent)
        assert backend.is_alive("s3")
    finally:
        await backend.close()


async def test_backend_stops_a_spare_for_a_session_the_pool_cannot_serve(
    tmp_path: Path,
) -> None:
    backend = LocalBackend(tmp_path / "data", settings=BridgeSettings(), warm_pool=1,
                           max_sandboxes=2)
    agent = make_agent(tmp_path)
    backend.start_warm_pool()
    try:
        await wait_for_spare(backend)
        await backend.create("s1", agent)  # takes the spare, which is started again
        await wait_for_spare(backend)
        assert backend.held() == 2
        state = pack_workspace(make_agent_folder(tmp_path, "state"))
        await backend.create("s2", agent, state=state)  # a restore: no warm sandbox fits
        assert backend.held() == 2
        with pytest.raises(CapacityExceeded):
            await backend.create("s3", agent)
    finally:
        await backend.close()


async def wait_for_spare(backend: LocalBackend) -> None:
    deadline = time.monotonic() + POOL_WAIT
    while (pool := backend.stats().pool) is None or not pool.ready:
        assert time.monotonic() < deadline, f"the pool never had a spare: {pool}"
        await asyncio.sleep(0.05)


async def test_runner_refuses_a_create_beyond_its_cap_with_resource_exhausted(
    tmp_path: Path,
) -> None:
    bundle = pack_workspace(make_agent_folder(tmp_path))
    with Cluster(tmp_path / "cluster").start() as cluster:
        runner = cluster.add_runners("r1", max_sandboxes=1)[0]
        async with grpc.aio.insecure_channel(runner.address) as channel:
            stub = pb_grpc.RunnerStub(channel)

            async def create(session_id: str) -> pb.CreateSandboxResponse:
                return await stub.CreateSandbox(
                    pb.CreateSandboxRequest(session_id=session_id, agent_name="echo",
                                            agent_version="1", agent_bundle=bundle,
                                            agent_config_json=b'{"backend":"mock"}'),
                    metadata=call_metadata(SECRET), timeout=60)

            await create("s1")
            with pytest.raises(grpc.aio.AioRpcError) as refusal:
                await create("s2")
            assert refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at capacity" in (refusal.value.details() or "")


def test_coordinator_answers_503_when_its_runners_are_full_and_busy(tmp_path: Path) -> None:
    with Cluster(tmp_path / "cluster").start() as cluster:
        cluster.add_runners("r1", max_sandboxes=1)
        with cluster.client() as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            busy = create_session(client, "echo")["id"]
            with slow_turn(client, busy, tokens=200):  # no idle sandbox to free
                response = client.post("/api/sessions", json={"agent": "echo"})
            assert response.status_code == 503, response.text
            assert response.json()["statusCode"] == 503
            assert "full" in response.json()["error"]
